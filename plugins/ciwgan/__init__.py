"""ciwGAN and fiwGAN (Beguš 2021): WaveGAN with a Q-network that learns lexical codes
from generated audio only; the networks, the TF1-style RMSProp and the trainer."""
