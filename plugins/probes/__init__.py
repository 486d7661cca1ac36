"""Probes that work on any torch.nn.Module: averaged feature maps (Beguš & Zhou, Eq. 1)
and their series, intervals and figures."""
