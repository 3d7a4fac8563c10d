"""Standard conditions: set one, keep ``lastTransitionTime`` unless its status changes."""

from __future__ import annotations

from quantwise.api.status import Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> tuple[list[Condition], bool]:
    """Return the conditions with ``type_`` set, and whether its status or reason changed.

    ``lastTransitionTime`` moves only when the status changes (metav1.Condition semantics).
    """
    message = message[:32768]
    for index, current in enumerate(conditions):
        if current.type != type_:
            continue
        changed = (current.status, current.reason) != (status, reason)
        when = now if current.status != status else current.last_transition_time
        updated = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
            last_transition_time=when,
        )
        return [*conditions[:index], updated, *conditions[index + 1 :]], changed
    added = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now,
    )
    return [*conditions, added], True


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if set."""
    return next((c for c in conditions if c.type == type_), None)
