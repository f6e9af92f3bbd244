"""Exceptions of secure aggregation (``protocols._secagg_*``, ``node._secagg``,
``coordinator._secagg``).

Hierarchy (every class also derives from :class:`~protocols.ProtocolError`)::

    SecAggError                    base of everything secure aggregation raises
    ├── SecAggParameterError       round parameters are invalid or could overflow the modulus
    ├── SecAggStageError           a stage function was called out of order or twice
    ├── SecAggMessageError         a received message is refused
    │   ├── MalformedMessageError      it does not parse, or its content is inconsistent
    │   ├── ReplayedMessageError       it belongs to another round or stage, or came before
    │   ├── MisaddressedMessageError   it is addressed to another node
    │   ├── UnknownSenderError         its sender is not a participant of the round
    │   ├── ForgedMessageError         a signature or an authentication tag does not verify
    │   └── UnmaskRefusedError         a node refuses an unmask request (would reveal too much)
    ├── TooFewSurvivorsError       fewer nodes than the round needs are still answering
    └── NoiseBoundExceededError    a noise share fell outside the tail bound (probability < 2**-40)
"""

from __future__ import annotations

from protocols._errors import ProtocolError, SignatureError

__all__ = [
    "ForgedMessageError",
    "MalformedMessageError",
    "MisaddressedMessageError",
    "NoiseBoundExceededError",
    "ReplayedMessageError",
    "SecAggError",
    "SecAggMessageError",
    "SecAggParameterError",
    "SecAggStageError",
    "TooFewSurvivorsError",
    "UnknownSenderError",
    "UnmaskRefusedError",
]


class SecAggError(ProtocolError):
    """Base class of every error raised by secure aggregation."""


class SecAggParameterError(SecAggError):
    """Round parameters are invalid (threshold, sizes) or could overflow the modulus.

    Deliberately not a :class:`ValueError`, so that pydantic validators let it through
    unchanged and callers see this precise type.
    """


class SecAggStageError(SecAggError):
    """A stage function was called before the stage it depends on, or twice."""


class SecAggMessageError(SecAggError):
    """A received secure-aggregation message is refused; the message says why."""


class MalformedMessageError(SecAggMessageError):
    """A message (or the plaintext inside an encrypted share) is malformed or inconsistent."""


class ReplayedMessageError(SecAggMessageError):
    """A message of another round or stage, or one already received from the same sender."""


class MisaddressedMessageError(SecAggMessageError):
    """A message addressed to another participant."""


class UnknownSenderError(SecAggMessageError):
    """A message whose sender is not a participant of the round (or not of this stage)."""


class ForgedMessageError(SecAggMessageError, SignatureError):
    """A signature over advertised keys, or an encrypted share's authentication tag, fails."""


class UnmaskRefusedError(SecAggMessageError):
    """A node refuses an unmask request that would reveal more than the protocol allows."""


class TooFewSurvivorsError(SecAggError):
    """Fewer participants than the threshold (or the noise calibration) remain."""


class NoiseBoundExceededError(SecAggError):
    """A node's noise share exceeded the tail bound the overflow argument relies on.

    Happens with probability below ``2**-40`` per round; the node then withdraws.
    """
