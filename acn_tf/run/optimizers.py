"""The classifiers' SGD as PyTorch's torch.optim.SGD computes it.

The published CIFAR recipes this project reproduces (DML, PCL, MCL: SGD, Nesterov
momentum 0.9, weight decay 5e-4, step decay) were trained with PyTorch's SGD, whose
update differs from Keras' SGD in two ways that change the numbers:

- Weight decay is L2 in the gradient (g + wd * w), so it goes through the momentum
  buffer: in steady state it shrinks the weights by lr * wd / (1 - momentum) per step,
  10x Keras' decoupled lr * wd at momentum 0.9.
- The buffer sums gradients and the learning rate multiplies it at each step; Keras'
  buffer sums lr * gradient. With a constant rate the two are the same; across a step
  decay Keras' buffer still carries steps at the old rate (for about 1 / (1 - momentum)
  steps), PyTorch's does not.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="acn_tf")
class PyTorchSGD(keras.optimizers.SGD):
  """SGD with coupled L2 weight decay and PyTorch's momentum rule.

  For every variable w it updates (batch-norm scales and biases too, as PyTorch's
  SGD; `exclude_from_weight_decay` is honoured), with gradient g, momentum mu and
  the learning rate lr_t of this step:

      g <- g + weight_decay * w
      b <- mu * b + g                 (b starts at zero: b = g on the first step)
      g <- g + mu * b   (Nesterov)    or   g <- b
      w <- w - lr_t * g

  Keras' SGD update (m <- mu * m - lr * g; w <- w + mu * m - lr * g with Nesterov)
  is not reused with the decay added to g: it keeps lr inside its buffer, which
  after a learning-rate drop is not PyTorch's step (module docstring). The buffer
  is the `momentum` optimizer variable, so checkpoints hold it as they hold Keras'
  one; it holds b, not Keras' m = -lr * b, so a checkpoint of one optimizer does
  not resume with the other.
  """

  def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False,
               weight_decay=None, name="pytorch_sgd", **kwargs):
    super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                     weight_decay=weight_decay, name=name, **kwargs)

  def _apply_weight_decay(self, variables):
    """Nothing: the decay is in the gradient (update_step), not a separate shrink."""
    del variables

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    if self.weight_decay and self._use_weight_decay(variable):
      gradient = ops.add(gradient,
                         ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable))
    if self.momentum == 0:
      self.assign_sub(variable, ops.multiply(learning_rate, gradient))
      return
    buffer = self.momentums[self._get_variable_index(variable)]
    momentum = ops.cast(self.momentum, variable.dtype)
    new_buffer = ops.add(ops.multiply(momentum, buffer), gradient)
    self.assign(buffer, new_buffer)
    step = ops.add(gradient, ops.multiply(momentum, new_buffer)) if self.nesterov else new_buffer
    self.assign_sub(variable, ops.multiply(learning_rate, step))
