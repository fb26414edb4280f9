"""What each training method trains: the one table the library asks.

A method is a configuration of one code path (docs/METHOD.md): whether the
classifiers distil from each other, whether Phase B also trains on a divergent
batch, and whether Phase A (generator, discriminator, search) makes that batch.
Which settings a method reads, how many classifiers it needs and which model
the builders make all follow from here.
"""

from typing import NamedTuple, Tuple


class MethodTraits(NamedTuple):
  """distills: the DML term between the classifiers (temperature, kd_weight);
  divergent_batch: Phase B's terms on a divergent batch (adv_* weights, the
  label mask); adversarial_phase: Phase A makes that batch (the adversarial
  section); branched: the classifiers are the branches of one network, which
  learn from each other through terms of their own (the branched section)."""
  distills: bool
  divergent_batch: bool
  adversarial_phase: bool
  branched: bool = False


METHOD_TRAITS = {
    # Each classifier on its labels alone: DML with the distillation term off.
    "independent": MethodTraits(distills=False, divergent_batch=False,
                                adversarial_phase=False),
    "dml": MethodTraits(distills=True, divergent_batch=False, adversarial_phase=False),
    # The rival: DML whose divergent batch is a noisy copy of the real one.
    "dml_noise": MethodTraits(distills=True, divergent_batch=True, adversarial_phase=False),
    "acn": MethodTraits(distills=True, divergent_batch=True, adversarial_phase=True),
    # KDCL: every peer distilled from one ensemble target (acn_tf/method/kdcl.py).
    "kdcl": MethodTraits(distills=True, divergent_batch=False, adversarial_phase=False),
    # ONE and CL-ILR: the branches of one network distil from a gated ensemble or
    # the other heads' consensus (acn_tf/method/one.py, cl_ilr.py); their own
    # temperatures and weights are the branched section's.
    "one": MethodTraits(distills=False, divergent_batch=False, adversarial_phase=False,
                        branched=True),
    "cl_ilr": MethodTraits(distills=False, divergent_batch=False, adversarial_phase=False,
                           branched=True),
}


def method_traits(method: str) -> MethodTraits:
  """The traits of `method`; KeyError naming the table for one it lacks."""
  if method not in METHOD_TRAITS:
    raise KeyError(f"Method {method!r} has no entry in METHOD_TRAITS "
                   "(acn_tf/config/methods.py): add what it trains there.")
  return METHOD_TRAITS[method]


def methods_with(trait: str) -> Tuple[str, ...]:
  """The methods that have `trait` (a field of MethodTraits), in table order."""
  return tuple(method for method, traits in METHOD_TRAITS.items() if getattr(traits, trait))


def min_classifiers(method: str) -> int:
  """Co-distillation needs a peer, as do branches that learn from each other; a
  method that does neither trains one or more."""
  traits = method_traits(method)
  return 2 if traits.distills or traits.branched else 1
