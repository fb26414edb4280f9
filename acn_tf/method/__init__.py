"""The method of docs/METHOD.md: its losses, the Restricted Adversarial Search,
the co-distillation model (Phase B; independent and DML) and the adversarial
co-distillation model (Phase A before Phase B), Phase A's health figures, and the
rivals: DML with noise (noise.py) and KDCL (kdcl.py).
Start reading at codistillation.py, then adversarial.py.
"""
