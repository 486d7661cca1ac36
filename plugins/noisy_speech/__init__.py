"""Noisy speech for enhancement: the VoiceBank+DEMAND loader (``voicebank_demand``)
and mixtures of any clean speech with any noise in its layout (``noisy_mixtures``)."""
