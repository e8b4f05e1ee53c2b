"""What the paid commands (harvest, harvest --select, pseudolabel) say about items that
failed: the list, and what to do about each kind of failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from vlmclient import TeacherClient

__all__ = ["failure_advice", "retry_advice", "show_failed", "shown", "too_long_count"]


def shown(text: str) -> str:
    """A file name or reason as printable text: non-UTF-8 bytes as \\xNN, no rich markup."""
    from rich.markup import escape

    from distill.data import display

    return escape(display(text))


def show_failed(out: Console, failed: list[tuple[str, str]]) -> None:
    """The failed items (item, reason), the first ten of them."""
    for item, reason in failed[:10]:
        out.print(f"[red]failed[/] {shown(item)}: {shown(reason)}")
    if len(failed) > 10:
        out.print(f"... and {len(failed) - 10} more failed")


def show_left_out(out: Console, left: list[tuple[str, str]], *, written: bool) -> None:
    """The images whose pixels cannot be decoded (image id, reason; the first ten), and
    what became of them: not bought, the store (``written`` or not yet) without them,
    train and eval leaving them out."""
    for item, reason in left[:10]:
        out.print(f"[yellow]left out[/] {shown(item)}: {shown(reason)}")
    if len(left) > 10:
        out.print(f"... and {len(left) - 10} more left out")
    if not left:
        return
    n = len(left)
    them = "it" if n == 1 else "them"
    store = (
        f"the embedding store is written without {them}, and train and eval leave {them} out"
        if written else f"the embedding store, once written, leaves {them} out"
    )
    out.print(
        f"[yellow]{n} image{'s' * (n > 1)} cannot be decoded[/] (listed above; not "
        f"bought): {store}. Replace {them} with a good copy and harvest again to buy "
        f"{them}, or remove {them}.",
        soft_wrap=True,
    )


def too_long_count(failed: list[tuple[str, str]]) -> int:
    """How many of the ``failed`` are prompts refused as too long for the teacher."""
    from distill.harvest import TOO_LONG

    return sum(reason.startswith(TOO_LONG) for _, reason in failed)


def failure_advice(out: Console, failed: list[tuple[str, str]], client: TeacherClient) -> None:
    """What to do about the ``failed`` items (item, reason): fix or shorten those no
    rerun can help, run again for the others."""
    from distill.harvest import UNREADABLE

    unreadable = sum(reason.startswith(UNREADABLE) for _, reason in failed)
    too_long = too_long_count(failed)
    if unreadable:
        out.print(
            f"[red]{unreadable} image views cannot be read[/] (listed above): fix or remove "
            "them, then run again; re-running alone will not help them."
        )
    if too_long:
        one = too_long == 1
        out.print(
            f"[red]{too_long} prompt{'' if one else 's'} {'is' if one else 'are'} too long "
            f"for the teacher[/] (listed above; refused, not billed): shorten the class "
            f"name{'' if one else 's'} (or --prompt), then run again; re-running alone will "
            f"not help {'it' if one else 'them'}. The other items are bought and cached."
        )
    others = len(failed) - unreadable - too_long
    if others:
        out.print(
            f"[red]{others} items failed at the teacher[/]; "
            + retry_advice(client.stats.charged_no_answer, client.billed_malformed)
        )


def retry_advice(charged_no_answer: int, billed_unusable: int = 0) -> str:
    """What a rerun of failed items costs: nothing lost, unless attempts were charged
    without an answer (the provider may have billed them) or billed answers could not be
    used: a rerun buys those items again.

    >>> retry_advice(0)
    'run again to retry them (nothing paid is lost).'
    >>> retry_advice(0, 2)[:60]
    '2 billed answers could not be used (charged, listed above as'
    """
    if not charged_no_answer and not billed_unusable:
        return "run again to retry them (nothing paid is lost)."
    parts = []
    if billed_unusable:
        parts.append(
            f"{billed_unusable} billed answers could not be used (charged, listed above as "
            "'malformed' in the ledger): a rerun buys those items again, and the teacher may "
            "answer them the same way; check the model and its parameters first."
        )
    if charged_no_answer:
        parts.append(
            f"{charged_no_answer} requests were charged at their worst case with no answer "
            "(timed out or lost after sending, so the provider may have billed them): a "
            "rerun buys those items again. If they timed out, raise --timeout before running "
            "again."
        )
    return " ".join(parts)
