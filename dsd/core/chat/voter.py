"""The voter and follower: promises an epoch to one candidate, and follows one sequencer.

A promise is on disk before it is told (STATUS). A daemon refuses (REFUSE) an older epoch,
a second candidate of its epoch, a candidate that is not its view's leader, and another chat
cluster. It takes APPENDs only from the sequencer of its epoch or a newer one, only where its
log holds the entry they follow (log matching), and acknowledges only the prefix so checked;
with the sequencer it is a quorum of, it commits an entry of the epoch on arrival.
"""

from __future__ import annotations

from dsd.core.actions import Action, Log, Transmit
from dsd.core.chat.roles import FETCHING, FOLLOWING
from dsd.core.link_messages import MAX_BATCH, Ack, Append, Entries, Fetch, Gather, Refuse, Snapshot, Status, fitting
from dsd.store import Base, ChatState


class Voter:
    """The voter's and follower's rules; a part of `dsd.core.chat.core.Chat`, whose state it uses."""

    def _on_gather(self, message: Gather, out: list[Action]) -> None:
        """Promise the epoch to the view's leader, unless a newer one or another daemon has it."""
        refusal = None
        if self._foreign_to(message.cluster):
            refusal = "cluster"
            self._note_foreign(message.src, message.cluster, out)
        elif message.term < self.epoch or (message.term == self.epoch and self.voted_for not in ("", message.src)):
            refusal = "epoch"
        elif message.src != self.leader:
            refusal = "leader"  # it asks again; by then the views may agree
        if refusal is not None:
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, refusal)))
            return
        if (message.term, message.src) != (self.epoch, self.voted_for):
            if self.role != FOLLOWING:
                self._step_down(out)
            self._promise(message.term, message.src)
        self.sequencer = message.src
        self.verified = self.log.commit
        out.append(Transmit(message.src, Status(self.name, self.epoch, self.cluster, self.log.commit,
                                                self.log.last, self.log.last_term)))

    def _on_refuse(self, message: Refuse, now: float, out: list[Action]) -> None:
        if message.reason == "cluster":
            self._note_foreign(message.src, message.cluster, out)
            return
        self.highest_epoch = max(self.highest_epoch, message.term)
        if message.reason == "epoch" and message.term >= self.epoch and self.role != FOLLOWING:
            self._start_candidacy(now, out)  # a newer epoch exists: win one newer still

    def _accept_sequencer(self, message: Append | Snapshot, out: list[Action]) -> bool:
        """Whether `message` comes from the sequencer of an epoch this daemon may follow; follow it if so."""
        if self._foreign_to(message.cluster):
            self._note_foreign(message.src, message.cluster, out)
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "cluster")))
            return False
        if message.term < self.epoch:
            self.counters.link_messages_ignored += 1
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "epoch")))
            return False
        if message.term == self.epoch and self.sequencer == message.src:
            return True
        if self.role != FOLLOWING:
            self._step_down(out)  # it won this epoch or a newer one: only one daemon can
        self._promise(message.term, message.src)
        self.sequencer = message.src
        self.verified = self.log.commit
        return True

    def _on_append(self, message: Append, now: float, out: list[Action]) -> None:
        if not self._accept_sequencer(message, out):
            return
        self._heard_sequencer = now
        log = self.log
        if message.prev > log.last or not log.matches(message.prev, message.prev_term):
            need = log.last + 1 if message.prev > log.last else log.commit + 1
            out.append(Transmit(message.src, Ack(self.name, self.epoch, self.verified, log.commit, need)))
            return
        for entry in message.entries:
            seq = entry["seq"]
            held = log.term_at(seq)
            if seq <= log.commit:
                if held is not None and held != entry["term"]:  # never, by invariant 5: say so, take nothing
                    out.append(Log("error", f"chat: {message.src} sends seq {seq} of epoch {entry['term']}, "
                                            f"committed here in epoch {held}: refused"))
                    return
                continue
            if held == entry["term"]:
                continue  # the same entry (log matching)
            if held is not None:
                log.truncate(seq - 1)
            log.append([entry])
        self.verified = max(self.verified, message.prev + len(message.entries))
        committed = log.commit
        target = min(message.commit, self.verified)
        config = log.config
        if config is not None and config.is_quorum({message.src, self.name}) and log.term_at(self.verified) == self.epoch:
            target = self.verified  # the sequencer and this daemon are a quorum: held by both, it is committed
        self._commit_to(target, now, out)
        if message.entries or log.commit > committed:
            self._ack_due = message.src

    def _on_fetch(self, message: Fetch, out: list[Action]) -> None:
        if (message.term, message.src) != (self.epoch, self.voted_for):
            self.counters.link_messages_ignored += 1
            if message.term <= self.epoch:  # promised to another since: the candidate must try anew
                out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "epoch")))
            return
        after = message.after
        base = self.store.base() if after < self.store.first_seq() - 1 else None
        if base is not None:
            out.extend(Transmit(message.src, part) for part in self._snapshot_parts(base))
            after = base.seq
        out.append(Transmit(message.src, Entries(self.name, self.epoch, fitting(self.log.read(after, MAX_BATCH)))))

    def _on_snapshot(self, message: Snapshot, now: float, out: list[Action]) -> None:
        """A part of a snapshot from the sequencer or, while this candidate fetches, from its source."""
        gathering = self.gathering
        fetching = self.role == FETCHING and gathering is not None and message.src == gathering.best
        if fetching:
            if message.term != self.epoch:
                return
        elif not self._accept_sequencer(message, out):
            return
        base = self._assemble(message)
        if base is None:
            return
        held = self.log.commit + len(gathering.fetched) if fetching and gathering else self.verified
        if base.seq > held:
            self._install(base, message.src, now, out)
            if fetching and gathering:
                gathering.fetched = []
        if not fetching:
            self.verified = max(self.verified, base.seq)
            self._ack_due = message.src

    def _assemble(self, part: Snapshot) -> Base | None:
        """The snapshot once its last part is in; parts must come in order, a first part restarts."""
        key = (part.src, part.term, part.base, part.base_term, part.total, part.ids_total)
        if part.offset == part.ids_offset == 0:
            self._snapshot = (key, [], [])
        if (self._snapshot is None or self._snapshot[0] != key or part.offset != len(self._snapshot[1])
                or part.ids_offset != len(self._snapshot[2])):
            self.counters.link_messages_ignored += 1  # a part lost before this one: the source sends it all again
            return None
        _, users, ids = self._snapshot
        users.extend(part.users)
        ids.extend(part.ids)
        if len(users) < part.total or len(ids) < part.ids_total:
            return None
        self._snapshot = None
        trimmed = tuple((user, id, seq, time) for user, id, seq, time in ids)
        return Base(part.base, part.base_term, {join["user"]: join for join in users}, part.config, trimmed)

    def _install(self, base: Base, source: str, now: float, out: list[Action]) -> None:
        skipped = base.seq - self.log.commit
        self.log.install(base)
        self.counters.snapshots_installed += 1
        self.verified = base.seq
        config = self.log.config
        if config is not None and not self.cluster:
            self._adopt_cluster(config.cluster)
        self.presence.reset(self.store.users(), now)
        out.append(Log("warning", f"chat: installed a snapshot from {source} at seq {base.seq}: "
                                  f"{skipped} entries trimmed before they reached this daemon are not published here"))
        self._resolve_known(out)

    def _adopt_cluster(self, cluster: str) -> None:
        self.cluster = cluster
        self.store.save_state(ChatState(cluster, self.epoch, self.voted_for))
