"""The daily count of paid broadcasts (storage.paid, bot.delivery.paid) on both back ends:
outcomes add to their day in their own transaction, and a restart starts from that count."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.delivery.paid import PaidBudget, paid_messages
from storage import paid as paid_sends
from storage.models import DeliveryState, OutcomeRecord
from storage.outbox import enqueue_notice
from storage.store import Store
from tests.fakes.clock import ManualClock

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, 04:00 in Baku


async def test_sent_paid_outcomes_count_on_their_day(store_target: str) -> None:
    store = await Store.open(store_target)
    try:
        # Any outbox rows do: three notices, as the paid count does not look at the kind.
        ids = [await enqueue_notice(store, chat, "en", f"Notice {chat}", NOW) for chat in (1, 2, 3)]
        await store.record_outcomes([
            OutcomeRecord(ids[0], DeliveryState.SENT, NOW, message_id=1, paid_day="2026-01-01"),
            OutcomeRecord(ids[1], DeliveryState.SENT, NOW, message_id=2),  # went free
            OutcomeRecord(ids[2], DeliveryState.SENT, NOW, message_id=3, paid_day="2026-01-01"),
        ])  # fmt: skip
        await store.record_outcomes(
            [OutcomeRecord(ids[0], DeliveryState.SENT, NOW, paid_day="2026-01-02")]
        )
        assert await paid_sends.today(store, "2026-01-01") == ("2026-01-01", 2)
        assert await paid_sends.today(store, "2026-01-02") == ("2026-01-02", 1)
        assert await paid_sends.today(store, "2026-01-03") == ("2026-01-03", 0)
    finally:
        await store.close()


async def test_the_budget_counts_days_in_the_bot_s_time_zone() -> None:
    clock = ManualClock(NOW - 5 * 3600)  # 2025-12-31 23:00 in Baku (UTC+4)
    budget = PaidBudget(2, ZoneInfo("Asia/Baku"), clock.now)
    assert paid_messages(2) == 20 and budget.cap == 20
    assert budget.today() == "2025-12-31"
    budget.load("2025-12-30", 19)  # another day's count does not apply
    assert budget.spent == 0
    budget.load("2025-12-31", 19)
    budget.charge()
    assert not budget.may_pay() and budget.stars_today == 2.0
    budget.refund()  # Telegram refused one: it costs nothing
    assert budget.may_pay()
    await clock.advance(3599)  # a second before midnight in Baku: the day is remembered
    assert budget.today() == "2025-12-31" and budget.spent == 19
    await clock.advance(1)  # midnight
    assert budget.today() == "2026-01-01" and budget.may_pay() and budget.spent == 0


def test_no_cap_always_pays_and_a_zero_cap_never_does() -> None:
    clock = ManualClock(NOW)
    assert PaidBudget(None, ZoneInfo("UTC"), clock.now).may_pay()
    assert not PaidBudget(0, ZoneInfo("UTC"), clock.now).may_pay()
