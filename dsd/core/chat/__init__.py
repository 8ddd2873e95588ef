"""The chat log: a replicated log with Raft's safety, sequenced by the bully leader, as a pure state machine.

Every daemon holds a copy of one log of entries (messages, presence, configurations). The
bully leader of the view (`dsd.core.node`) becomes the *sequencer*, but only once it has won
an *epoch* from a quorum of the log's voters; then it gives every proposal the next seq and
replicates it. The modules, one role each:

- `config`:   who votes, and what a quorum is (majority; tie-breaker; joint configurations)
- `log`:      this daemon's copy of the log, its commit point, and its writes to the store
- `proposer`: this daemon's clients' proposals, until the log says what became of them
- `presence`: who is in the chat, and this daemon's client sessions
- `candidate`: winning an epoch from a quorum, adopting the most advanced log
- `voter`:    promising epochs, following one sequencer, log matching
- `sequencer`: numbering, replicating, committing, changing the configuration
- `roles`:    the names of the roles
- `core`:     `Chat`, composing them around the state they share

Invariants (what the tests and the simulations check), in the spirit of Raft's Figure 3:

1. Epochs are unique: a daemon promises an epoch to at most one candidate, on disk before it
   says so; a candidate wins an epoch only with the promises of a quorum of its configuration,
   and any two quorums share a voter. So at most one sequencer exists per epoch, ever.
2. A daemon that promised epoch E takes nothing from a sequencer of an older epoch: it refuses,
   and the older sequencer can commit nothing more (it lacks a quorum).
3. Log matching: every APPEND names the entry before its first (seq, epoch); a follower takes
   it only where its log holds that entry, and acknowledges only the prefix so checked. Two logs
   that hold an entry of the same seq and epoch are the same up to it.
4. A candidate adopts the most advanced log (last epoch, then last seq) of those who promised;
   it never re-stamps what it adopts. It commits an older epoch's entries only by committing an
   entry of its own epoch after them (Raft 5.4.2): its first entry restates the configuration.
5. Committed = an entry of the current epoch held (on disk) by a quorum, and everything before it.
   A committed entry is in the log of every later sequencer, so no two daemons ever hold
   different entries at one committed seq, and nothing acknowledged to a client is lost.
6. The configuration is in the log: the latest one in a daemon's log rules its decisions,
   committed or not; it changes one daemon at a time, through a joint configuration, and only
   after the sequencer has committed an entry of its epoch and the previous change.
7. A daemon whose side of the network holds no quorum of the voters refuses clients at once
   (`no_quorum`); its log catches up after the heal.
8. Client ids and daemon ids never collide (daemon ids hold ':'); a retried message is recorded
   once, also after its entry was trimmed (the store keeps trimmed ids for an hour, and a
   snapshot carries them to a daemon that catches up from it).

Epochs travel as the ``term`` of every link message and entry; the bully election's terms are
its own and the chat does not trust them.
"""

from dsd.core.chat.config import Config
from dsd.core.chat.core import MAX_REPLY_BYTES, Chat, ChatLimits, Counters, public
from dsd.core.chat.roles import ACTIVE, CATCHING_UP, FETCHING, FOLLOWING, GATHERING, OTHER_CLUSTER, VOTER
from dsd.core.chat.sequencer import MAX_TAIL, WINDOW, FollowerState

__all__ = [
    "ACTIVE", "CATCHING_UP", "FETCHING", "FOLLOWING", "GATHERING", "MAX_REPLY_BYTES", "MAX_TAIL", "OTHER_CLUSTER",
    "VOTER", "WINDOW", "Chat", "ChatLimits", "Config", "Counters", "FollowerState", "public",
]
