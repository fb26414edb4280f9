"""The method of docs/METHOD.md: its losses, the Restricted Adversarial Search,
the co-distillation model (Phase B; independent and DML) and the adversarial
co-distillation model (Phase A before Phase B), and Phase A's health figures; and
the branched rivals ONE (one.py) and CL-ILR (cl_ilr.py) on what they share
(branched.py). Start reading at codistillation.py, then adversarial.py.
"""
