"""What a transaction says it did, and what a queue keeps for a person to be told: a local
queue's change is done once committed; notices are said once."""

from __future__ import annotations

from aq.store.queue import Queue
from aq.store.replica import Delivery
from aq.store.tx import Tx


def test_a_local_queues_change_is_confirmed_once_committed(queue: Queue) -> None:
    """Without a remote there is nothing to push: the outcome carries the change's result, says
    the change is local and confirmed, and nothing is left unpushed."""
    def change(tx: Tx) -> str:
        tx.write(queue.qdir / "inbox" / "note.md", "echo hi\n")
        return "written"

    synced = queue.transact_synced(change, "aq: test write")
    assert (synced.value, synced.delivery, synced.confirmed) == ("written", Delivery.LOCAL, True)
    assert synced.unpushed == queue.unpushed == 0
    assert queue.transact(lambda tx: 7, "aq: nothing") == 7


def test_notices_are_taken_once(queue: Queue) -> None:
    """A notice is handed to whoever shows it first (the CLI or a worker), and then forgotten."""
    queue.replica.notices.append("kept on branch aq-kept/abc")
    assert queue.take_notices() == ["kept on branch aq-kept/abc"]
    assert queue.take_notices() == []
