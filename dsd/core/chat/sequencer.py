"""The sequencer: the view's leader once it has won its epoch, numbering and replicating entries.

It gives each proposal the next seq (or refuses it: name taken, not joined, no quorum),
replicates to every follower what it lacks (APPEND, or a SNAPSHOT for one behind the retained
history), commits the newest entry of its epoch that a quorum holds, and changes the
configuration one daemon at a time through a joint one: a caught-up daemon is added, one that
asked to leave, or was missing for remove_dead_after, or that an operator forgot, is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsd.core.actions import Action, Log, Transmit
from dsd.core.chat.config import Config, quorum_of
from dsd.core.chat.roles import ACTIVE, FETCHING, FOLLOWING, GATHERING
from dsd.core.link_messages import MAX_BATCH, Ack, Append, Entry, Fetch, Forward, Gather, Proposal, Remove, Result, Snapshot, fitting
from dsd.store import Base

WINDOW = 4 * MAX_BATCH  # entries in flight to one follower
MAX_TAIL = 20_000  # uncommitted entries before the sequencer refuses new proposals


@dataclass
class FollowerState:
    """What the sequencer knows of one follower's log."""

    next: int
    match: int  # the follower's log is known to match ours up to here (log matching)
    progress: float  # when the follower last acknowledged something new (or was sent something)
    told: int = 0  # the commit point last sent to it
    commit: int = 0  # the commit point it acknowledged
    trimmed: bool = False  # it needs entries this sequencer no longer keeps and cannot snapshot (reported once)


class Sequencer:
    """The sequencer's rules; a part of `dsd.core.chat.core.Chat`, whose state it uses."""

    def _on_forward(self, message: Forward, now: float, out: list[Action]) -> None:
        if self.leader != self.name or self.role == FOLLOWING or message.src in self.foreign:
            self.counters.link_messages_ignored += 1  # the proposer re-sends once it knows the sequencer
            return
        for proposal in message.proposals:
            if proposal["server"] != message.src:
                self.counters.link_messages_ignored += 1
                continue
            if self.role == ACTIVE:
                self._sequence(proposal, message.src, now, out)
            elif len(self.queue) < MAX_TAIL:
                self.queue.append(proposal)
        self._dirty = True

    def _sequence(self, proposal: Proposal, source: str, now: float, out: list[Action]) -> None:
        """Give `proposal` the next seq, or refuse it; `source` proposed it."""
        key = (proposal["user"], proposal["id"])
        if key in self._pending:
            self.counters.duplicates_dropped += 1
            return
        committed = self.log.find(*key)
        if committed is not None:
            self.counters.duplicates_dropped += 1
            self._result(source, {"user": key[0], "id": key[1], "seq": committed}, now, out)
            return
        refusal = self._refusal(proposal)
        if refusal is not None:
            self.counters.proposals_refused += 1
            code, text = refusal
            self._result(source, {"user": key[0], "id": key[1], "code": code, "message": text}, now, out)
            return
        entry = dict(proposal, seq=self.log.last + 1, term=self.epoch, time=round(self.wall_offset + now, 6))
        if entry["kind"] == "join":
            entry["text"] = "rejoined" if self.presence.present(entry["user"]) is not None else ""
        self._append(entry)

    def _append(self, entry: Entry) -> None:
        self.log.append([entry])
        self._pending[(entry["user"], entry["id"])] = entry["seq"]
        self.presence.sequenced(entry)
        self.counters.entries_sequenced += 1

    def _append_config(self, config: Config, now: float) -> None:
        proposal = self.proposer.proposal("config", "", "", config.text())
        entry = dict(proposal, seq=self.log.last + 1, term=self.epoch, time=round(self.wall_offset + now, 6))
        entry["session"] = ""
        self._append(entry)

    def _refusal(self, proposal: Proposal) -> tuple[str, str] | None:
        """Why the sequencer will not sequence `proposal`, or None."""
        if len(self.log.tail) >= MAX_TAIL:
            return "unavailable", "the sequencer has too many uncommitted entries; retry later"
        quorum = self._quorum_error() if proposal["kind"] in ("message", "join") else None
        if quorum is not None:  # a leave or a timeout waits in the log for the quorum to be back
            return quorum
        current = self.presence.present(proposal["user"])
        if proposal["kind"] == "join":
            if current is not None and current["session"] != proposal["session"]:
                return "name_taken", f"the name {proposal['user']!r} is in use on {current['server']}"
            return None
        if current is None or current["session"] != proposal["session"]:
            return "not_joined", f"{proposal['user']!r} is not in the chat: join first"
        if proposal["kind"] != "message" and current["server"] != proposal["server"]:
            return "not_joined", f"{proposal['user']!r} is on {current['server']} now"  # a stale timeout
        return None

    def _result(self, source: str, result: dict[str, Any], now: float, out: list[Action]) -> None:
        if source == self.name:
            self._on_results([result], now, out)
        else:
            out.append(Transmit(source, Result(self.name, self.epoch, [result])))

    def _replicate(self, name: str, now: float, out: list[Action]) -> None:
        """Send `name` what it lacks, up to the window; an empty APPEND carries a new commit."""
        follower = self.followers[name]
        log = self.log
        cluster = self._log_cluster()
        if name in self.foreign:
            return  # it belongs to another chat cluster: nothing of this log is its
        while follower.next <= log.last and follower.next - follower.match - 1 < WINDOW:
            if follower.next < self.store.first_seq():
                base = self.store.base()
                if base is None:
                    if not follower.trimmed:
                        follower.trimmed = True
                        out.append(Log("warning", f"chat: cannot catch {name} up from seq {follower.next}: "
                                                  "older than the retained history, whose base is unknown"))
                    return
                out.extend(Transmit(name, part) for part in self._snapshot_parts(base))
                follower.next = base.seq + 1  # its match stays: it holds nothing until it acknowledges
                follower.progress = now
                continue
            prev = follower.next - 1
            entries = fitting(log.read(prev, MAX_BATCH))
            out.append(Transmit(name, Append(self.name, self.epoch, cluster, prev, log.term_at(prev) or 0,
                                             entries, log.commit)))
            follower.next += len(entries)
            follower.told = log.commit
            follower.progress = now  # resend only after resend_interval with nothing sent or acknowledged
        if max(follower.told, follower.commit) < log.commit and follower.next > log.last:  # it may have committed on its own
            out.append(Transmit(name, Append(self.name, self.epoch, cluster, log.last, log.last_term, [], log.commit)))
            follower.told = log.commit
            follower.progress = now

    def _snapshot_parts(self, base: Base) -> list[Snapshot]:
        """`base` as SNAPSHOT messages: the presence table and the trimmed ids in parts that
        each fit a link message (a part carries a slice of each)."""
        users = list(base.users.values())
        ids = list(base.ids)
        self.counters.snapshots_sent += 1
        parts: list[Snapshot] = []
        offset = ids_offset = 0
        while not parts or offset < len(users) or ids_offset < len(ids):
            batch = fitting(users[offset:offset + MAX_BATCH]) if offset < len(users) else []
            id_batch = ids[ids_offset:ids_offset + MAX_BATCH]
            parts.append(Snapshot(self.name, self.epoch, base.seq, base.term, offset, len(users), batch, base.config,
                                  self._log_cluster(), ids_offset, len(ids), id_batch))
            offset += len(batch)
            ids_offset += len(id_batch)
        return parts

    def _on_ack(self, message: Ack, now: float) -> None:
        follower = self.followers.get(message.src)
        if self.role != ACTIVE or follower is None or message.term != self.epoch:
            self.counters.link_messages_ignored += 1
            return
        if message.last > follower.match or message.commit > follower.commit:
            follower.progress = now
        follower.match = max(follower.match, min(message.last, self.log.last))
        follower.commit = message.commit
        if message.need:  # it could not take what we sent: a gap, a mismatch, or it restarted
            follower.next = min(message.need, self.log.last + 1)
        self._dirty = True

    def _lagging(self, follower: FollowerState) -> bool:
        return follower.match < self.log.last or follower.commit < self.log.commit

    def _advance_commit(self, now: float, out: list[Action]) -> None:
        """Commit up to the newest entry of this epoch that a quorum holds (Raft 5.4.2: older
        entries commit only under it)."""
        log = self.log
        config = log.config
        if config is None:
            return
        me = {self.name} if self.name in config.everyone() else set()
        for seq in sorted({f.match for f in self.followers.values()} | {log.last}, reverse=True):
            if seq <= log.commit or log.term_at(seq) != self.epoch:
                return
            holders = me | {name for name, f in self.followers.items() if f.match >= seq}
            if config.is_quorum(holders):
                self._commit_to(seq, now, out)
                return

    def _note_absent(self, now: float) -> None:
        """Sequencer: when each voter went out of the view, for remove_dead_after."""
        config = self.log.config
        voters = config.everyone() if config else set()
        for name in list(self.absent):
            if name in self.peers or name not in voters:
                del self.absent[name]
        self.dead &= voters - set(self.peers)
        for name in voters - set(self.peers) - {self.name} - self.dead:
            self.absent.setdefault(name, now)

    def _change_config(self, now: float, out: list[Action]) -> None:
        """One membership change at a time, once the latest configuration and an entry of this
        epoch are committed: finish a joint configuration, else remove or add one daemon."""
        log = self.log
        config = log.config
        if config is None or log.config_seq > log.commit or log.commit_term != self.epoch:
            return
        if config.joint:
            self._append_config(Config(config.cluster, config.voters), now)
            self._dirty = True
            return
        voters = self._next_voters(config, now)
        if voters is not None:
            self.counters.config_changes += 1
            added = set(voters) - set(config.voters)
            change = f"adding {', '.join(added)}" if added else f"removing {', '.join(set(config.voters) - set(voters))}"
            out.append(Log("info", f"chat: {change}: voters will be {', '.join(sorted(voters))}"))
            self._append_config(Config(config.cluster, voters, config.voters), now)
            self._dirty = True

    def _next_voters(self, config: Config, now: float) -> dict[str, int] | None:
        """The voters after the next change, or None: asked removals first, then the long dead,
        then daemons that have caught up."""
        voters = config.voters
        live = set(self.peers) | {self.name}
        for name in sorted(self.removals):
            self.removals.discard(name)
            self.excluded.add(name)
            if name in voters and len(voters) > 1:
                return {n: p for n, p in voters.items() if n != name}
        for name in sorted(self.dead):
            rest = {n: p for n, p in voters.items() if n != name}
            if name in voters and rest and quorum_of(rest, live):
                return rest
        if self.name not in voters and not self.retiring and self.name not in self.excluded:
            return {**voters, self.name: self.priority}  # a sequencer that joined lately: it holds the log
        for name in sorted(self.peers):
            follower = self.followers.get(name)
            if name not in voters and name not in self.foreign and name not in self.excluded and follower is not None \
                    and follower.match >= self.log.commit:
                return {**voters, name: self.peers[name]}
        return None

    def _on_remove(self, message: Remove, now: float) -> None:
        if self.role == ACTIVE and message.src not in self.foreign:
            self.removals.add(message.name)
            self._dirty = True
        else:
            self.counters.link_messages_ignored += 1

    def forget(self, name: str, now: float) -> list[Action]:
        """An operator removes `name` from the configuration at once (`dsctl forget`)."""
        out: list[Action] = []
        if self.role == ACTIVE:
            self.removals.add(name)
            self._dirty = True
        elif self.leader not in (None, self.name):
            out.append(Transmit(self.leader, Remove(self.name, self.epoch, name)))  # type: ignore[arg-type]
        return self._done(now, out)

    def retire(self, now: float) -> list[Action]:
        """This daemon is leaving: ask the sequencer to remove it (again every resend_interval)."""
        self.retiring = True
        self._retire_sent = now - self.limits.resend_interval
        return self.tick(now)

    def _retire_again(self, now: float, out: list[Action]) -> None:
        if not self.retiring or self.retired() or now < self._retire_sent + self.limits.resend_interval:
            return
        self._retire_sent = now
        if self.role == ACTIVE:
            self.removals.add(self.name)
            self._dirty = True
        elif self.leader not in (None, self.name):
            out.append(Transmit(self.leader, Remove(self.name, self.epoch, self.name)))  # type: ignore[arg-type]

    def _leader_tick(self, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if gathering is not None and now >= gathering.sent + self.limits.resend_interval:
            gathering.sent = now
            if self.role == GATHERING and now >= gathering.started + self.limits.gather_timeout:
                self._gathered(now, out, force=True)
            if self.role == GATHERING and self.gathering is not None:
                for name in sorted(set(self.peers) - set(self.gathering.statuses)):
                    out.append(Transmit(name, Gather(self.name, self.epoch, self.cluster)))
            elif self.role == FETCHING and now >= gathering.started + self.limits.gather_timeout:
                self._start_candidacy(now, out)  # the fetch source went silent: gather again
            elif self.role == FETCHING and gathering.best is not None:
                out.append(Transmit(gathering.best, Fetch(self.name, self.epoch,
                                                          self.log.commit + len(gathering.fetched))))
        if self.role != ACTIVE:
            return
        for name, follower in self.followers.items():
            if self._lagging(follower) and now >= follower.progress + self.limits.resend_interval:
                follower.next = follower.match + 1
                follower.told = follower.commit
                follower.progress = now
                self._replicate(name, now, out)
        self._expire_orphans(now, out)
        for name, since in list(self.absent.items()):
            if now >= since + self.limits.remove_dead_after:
                del self.absent[name]
                self.dead.add(name)
                self._dirty = True

    def _expire_orphans(self, now: float, out: list[Action]) -> None:
        """Users whose daemon left the cluster time out unless they come back elsewhere."""
        for join in self.presence.orphaned(set(self.peers) | {self.name}, now):
            if now >= self.presence.orphans[join["user"]] + self.limits.client_timeout:
                del self.presence.orphans[join["user"]]
                proposal = self.proposer.proposal("timeout", join["user"], join["session"], server=join["server"])
                self._sequence(proposal, self.name, now, out)
                self._dirty = True
