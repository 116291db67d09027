"""Types of the compiled scanner (`scanner.pyx`), for mypy."""

from collections.abc import Collection, Mapping

LEXEME_PATTERN: str
APOSTROPHE_PATTERN: str

class Scanner:
    def __init__(
        self, *, lexeme: str, apostrophe: str, classes: Mapping[str, int], words: Mapping[str, int],
        punct: Mapping[str, int], events: Collection[str], danger_tags: Collection[str],
        js_schemes: Collection[str], rare_schemes: Collection[str], web_schemes: Collection[str],
        extensions: Collection[str], header_words: Collection[str], nosql_ops: Collection[str],
        command_after: Collection[str], context_before: Collection[str], scheme_colons: Collection[str],
        tag_openers: Collection[str], internal_prefixes: tuple[str, ...],
    ) -> None: ...
    def classes(self, text: str) -> list[int]: ...
