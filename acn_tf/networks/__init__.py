"""The networks: classifier backbones, branched networks (a backbone split into a
shared trunk and branches, for ONE and CL-ILR), Phase A's generator and
discriminator, and the layers they share (fused batch norm, batch norm folded for
inference).

Keras layers and models only; nothing here reads a config or knows a method.
"""
