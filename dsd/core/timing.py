"""Protocol timings, and the ones derived from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The configured timings ([timing] in dsd.toml), in seconds."""

    heartbeat_interval: float = 0.2
    failure_timeout: float = 1.0
    discovery_timeout: float = 0.2

    @property
    def suspect_timeout(self) -> float:
        """Silence after which a peer is `suspect`: half the way to `dead`."""
        return self.failure_timeout / 2

    @property
    def election_timeout(self) -> float:
        """How long a candidate waits for a higher node to act, then for an ANSWER."""
        return self.heartbeat_interval

    @property
    def coordinator_timeout(self) -> float:
        """How long a candidate that got an ANSWER waits for the COORDINATOR."""
        return self.failure_timeout

    @property
    def max_probe_interval(self) -> float:
        """Cap of the start-up probe backoff while nobody has answered."""
        return 8 * self.discovery_timeout
