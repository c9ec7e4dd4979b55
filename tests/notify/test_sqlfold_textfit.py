"""WeChat template values: what `clean_text` keeps and how `utf16_len` counts, for every kind of character a
notice may carry (the fast paths for ordinary text must agree with the character-by-character rules)."""

from __future__ import annotations

import unicodedata

import pytest

from leadpush.wechat.format import clean_text, cut, utf16_len

SAMPLES = [
    "",
    "张三",
    "新线索「张三」已分配给您",
    "  来源：抖音广告，  电话：13800138000  ",
    "full\u3000width space",  # a Zs that is not " "
    "tab\tand\nnewline\r",  # Cc
    "zero\u200bwidth",  # Cf: taken out
    "joined 👨\u200d👩\u200d👧 family",  # the emoji joiner stays
    "flag 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # tag characters stay
    "skin 👍🏽 e\u0301",
    "bell\x07 and del\x7f",
    "lone \ud800 surrogate",
    "🎉" * 30,
]


def reference_clean(text: str) -> str:
    kept = "".join(
        " " if unicodedata.category(c) == "Cc" else c
        for c in text
        if unicodedata.category(c) != "Cf" or c == "\u200d" or 0xE0020 <= ord(c) <= 0xE007F
    )
    return " ".join(kept.split())


@pytest.mark.parametrize("text", SAMPLES)
def test_sqlfold_clean_text_and_utf16_len_follow_the_character_rules(text: str) -> None:
    assert clean_text(text) == reference_clean(text)
    assert utf16_len(text) == sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def test_sqlfold_a_cut_value_still_fits_and_ends_with_an_ellipsis() -> None:
    assert cut("🎉" * 30, 20) == "🎉" * 9 + "…"
    assert utf16_len(cut("🎉" * 30, 20)) <= 20
    assert cut("  张三  \u200b李四 ", 20) == "张三 李四"
