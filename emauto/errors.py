"""The one error hierarchy of emauto.

Every error says what was expected and what arrived. Re-exported by `emauto.microscope`.
"""

from __future__ import annotations


class EmautoError(Exception):
    """Base class of every error emauto raises on purpose."""


class ConfigError(EmautoError, ValueError):
    """A configuration file, URI or model field is invalid."""


class ModelFileError(EmautoError, ValueError):
    """A saved model, dataset or policy file is missing, corrupt or of the wrong kind."""


class InvalidSetpointError(EmautoError, ValueError):
    """A setpoint was rejected; the microscope state is unchanged."""


class UnknownKnobError(InvalidSetpointError):
    """A setpoint names a knob the backend does not have."""


class NonFiniteSetpointError(InvalidSetpointError):
    """A setpoint is NaN, infinite or not a real number."""


class OutOfLimitsError(InvalidSetpointError):
    """A setpoint lies outside the knob's limits (emauto never clips)."""


class InvalidRequestError(EmautoError, ValueError):
    """An acquisition request is malformed or outside the scan/detector limits."""


class BeamBlankedError(EmautoError, RuntimeError):
    """An acquisition was requested while the beam is blanked (e.g. after `safe()`)."""


class BackendError(EmautoError, RuntimeError):
    """The backend failed to carry out a valid command."""


class ClosedError(BackendError):
    """The microscope connection was closed."""


# --------------------------------------------------------------------------- safety layer


class SafetyError(EmautoError, RuntimeError):
    """The safety layer refused a command; the microscope state is unchanged."""


class StepTooLargeError(SafetyError, InvalidSetpointError):
    """A setpoint moves a knob by more than its maximum single step."""


class RateLimitError(SafetyError):
    """A setpoint changes a knob faster than its maximum rate."""


class DoseBudgetError(SafetyError):
    """An acquisition would exceed the cumulative dose budget."""


class WatchdogTrippedError(SafetyError):
    """The heartbeat watchdog tripped; only an operator reset re-enables commands."""


class ReadbackError(SafetyError):
    """A knob did not read back its setpoint within tolerance and timeout."""


class PermissionDeniedError(SafetyError):
    """The caller's role may not perform this command (e.g. an agent changing limits)."""


# --------------------------------------------------------------------------- transport


class TransportError(BackendError):
    """The connection to a remote microscope failed."""


class DeadlineExceededError(TransportError, TimeoutError):
    """No reply arrived before the request's deadline (after all retries)."""


class ProtocolError(TransportError, ValueError):
    """A message did not follow the wire protocol (schema, sizes, version)."""


class AuthError(TransportError, PermissionError):
    """Authentication failed or keys are missing/invalid."""


# --------------------------------------------------------------------------- sessions


class SessionError(EmautoError, ValueError):
    """A recorded session cannot be written or read as asked."""


class SessionCorruptError(SessionError):
    """A session's files are damaged beyond a torn last line (which opening repairs)."""


class ReplayExhaustedError(BackendError):
    """A replayed session has no more recorded frames matching the request."""


# --------------------------------------------------------------------------- agent


class AgentStateError(EmautoError, RuntimeError):
    """A daemon command is not allowed in the daemon's current state."""


class AbortedError(EmautoError, RuntimeError):
    """The operator aborted the running plan."""


# --------------------------------------------------------------------------- analysis


class AnalysisError(EmautoError, ValueError):
    """An image could not be analysed (wrong shape, non-finite values, nothing to find)."""


class ImageFileError(AnalysisError):
    """An image file is missing, unreadable or of an unsupported format."""


class NoLatticeError(AnalysisError):
    """The image shows no crystal lattice (no periodic peaks above the noise in its FFT)."""


class LabelError(EmautoError, ValueError):
    """Operator labels are empty, inconsistent or name an unknown class."""


class AcquisitionBudgetError(EmautoError, RuntimeError):
    """An acquisition past the episode's budget of frames was refused (nothing acquired)."""


class MeasurementRefusedError(EmautoError, ValueError):
    """A probe-shift measurement was refused: too few usable patches, or they disagree.

    ``misfit_m``: the fit's Hessian misfit (m), None when there was no fit."""

    def __init__(self, message: str, misfit_m: float | None = None) -> None:
        super().__init__(message)
        self.misfit_m = misfit_m


# --------------------------------------------------------------------------- sessions (hardening)


class SessionFormatError(SessionCorruptError):
    """A session's file is not what the recorder writes: a malformed or oversized document or
    frame, a symlink or a path leaving the session folder. Reading refuses it, changes
    nothing and allocates nothing for it."""


# --------------------------------------------------------------------------- policy sources


class PolicySourceError(ConfigError):
    """A policy would be loaded from a path that a session or a plan names, not the user:
    only shipped policies, folders given on the command line, or folders the daemon's own
    configuration lists are loaded."""


class AlreadyAppliedError(TransportError):
    """A retried command was applied before and is not applied again, but its reply (e.g. an
    acquisition's image) is no longer held: the server's reply cache let it go or restarted."""


class OutcomeUnknownError(TransportError):
    """The server cannot tell whether a command was applied (it stopped while the command ran,
    or forgot the client); it was not applied again. Read the state before going on."""


class AddressInUseError(ConfigError):
    """The server's bind address is already taken (another server is listening there)."""


class ConsoleSecurityError(ConfigError):
    """The web console would listen beyond loopback without TLS (a certificate and its key)
    and an operator token: it refuses to start."""


class LinkLostError(TransportError):
    """The daemon's link to the microscope is gone (the server stopped answering heartbeats
    within the bound, or its connection dropped)."""


class CalibrationDataError(SessionError):
    """A session holds too little of the calibration plan for a fit (frames missing, of the
    wrong kind or shape), or its frames do not support the fit (no bright-field disc, no
    pattern to follow)."""
