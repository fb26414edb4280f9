"""The networks: classifier backbones, Phase A's generator and discriminator, and
the layers they share (fused batch norm, batch norm folded for inference).

Keras layers and models only; nothing here reads a config or knows a method.
"""
