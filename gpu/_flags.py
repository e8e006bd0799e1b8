"""The row flags of the AMiD kernels: one bit per condition found while a chunk is
computed, raised as errors at the end of the pass (:func:`gpu._engine._raise_for_flags`,
one device sync for the whole batch, the same words from every backend)."""

import torch

_BAD_STUDENT = 1
_BAD_TEACHER = 2
_EMPTY_SUPPORT = 4
_INF_LOSS = 8
_NAN_LOSS = 16
_TEMPERATURE_STUDENT = 32
_TEMPERATURE_TEACHER = 64
_NAN_GRAD = 128
_INF_GRAD = 256
#: vocab_alignment="truncate" dropped more teacher (student) probability than allowed.
_TRUNCATED_TEACHER = 512
_TRUNCATED_STUDENT = 1024
#: Row flags need 11 bits.
_FLAG_DTYPE = torch.int16
