"""The demo library's data: shelves, books and covers in memory, seeded with a small catalogue.

Owns the state behind one `library_backend` server; each server gets its own store, so tests never
see each other's writes. It knows resource names ("shelves/{shelf}", "shelves/{shelf}/books/{book}")
and existence, and raises NOT_FOUND, ALREADY_EXISTS and FAILED_PRECONDITION as `StatusError`; field
validation belongs to the servicer. Reads hand out copies and writes store copies, so a response
being serialized never changes under a later write. grpc.aio runs every handler on one event loop and
no method here awaits, so no lock is needed.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import TypeVar

import grpc

import protos

# The generated stubs live in protos/_gen, which is importable only after this call.
protos.add_generated_path()

from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2
from library.v1 import library_pb2 as lib

from tests.support.rich_status import StatusError, precondition_failure, resource_info

SHELF_TYPE = lib.Shelf.DESCRIPTOR.full_name
BOOK_TYPE = lib.Book.DESCRIPTOR.full_name
COVER_TYPE = lib.BookCover.DESCRIPTOR.full_name

# One id syntax for shelves and books, AIP-122 style, so names never need escaping in a URL path.
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SHELF_NAME = re.compile(rf"shelves/({ID_PATTERN.pattern})")
BOOK_NAME = re.compile(rf"(shelves/{ID_PATTERN.pattern})/books/({ID_PATTERN.pattern})")


_Resource = TypeVar("_Resource", lib.Shelf, lib.Book, lib.BookCover)


def _copy(message: _Resource) -> _Resource:
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


def _timestamp(year: int, month: int, day: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.datetime(year, month, day, tzinfo=datetime.UTC))
    return stamp


class LibraryStore:
    """Shelves, books and covers by resource name, in creation order."""

    def __init__(self) -> None:
        self._shelves: dict[str, lib.Shelf] = {}
        self._books: dict[str, lib.Book] = {}
        self._covers: dict[str, lib.BookCover] = {}
        self._next_id = 1

    # Shelves.

    def shelves(self) -> list[lib.Shelf]:
        return [self._with_count(shelf) for shelf in self._shelves.values()]

    def shelf(self, name: str) -> lib.Shelf:
        return self._with_count(self._stored_shelf(name))

    def add_shelf(self, shelf_id: str, shelf: lib.Shelf) -> lib.Shelf:
        """Store `shelf` as shelves/{shelf_id}, or under a fresh id when `shelf_id` is empty."""
        name = f"shelves/{shelf_id or self._fresh_id('shelves/{}')}"
        if name in self._shelves:
            raise StatusError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"shelf {name!r} already exists",
                resource_info(SHELF_TYPE, name, "a shelf with this id already exists"),
            )
        stored = lib.Shelf(name=name, theme=shelf.theme)
        self._shelves[name] = stored
        return self._with_count(stored)

    def replace_shelf(self, shelf: lib.Shelf) -> lib.Shelf:
        stored = self._stored_shelf(shelf.name)
        stored.theme = shelf.theme
        return self._with_count(stored)

    def delete_shelf(self, name: str, force: bool) -> None:
        self._stored_shelf(name)
        books = self._book_names_on(name)
        if books and not force:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shelf {name!r} still holds {len(books)} books; set force to delete them too",
                precondition_failure("NOT_EMPTY", name, "the shelf holds books"),
            )
        for book_name in books:
            self._books.pop(book_name)
            self._covers.pop(book_name, None)
        del self._shelves[name]

    # Books.

    def books(self, shelf_name: str | None = None) -> list[lib.Book]:
        """Every book, or the books on one shelf (NOT_FOUND when the shelf does not exist)."""
        if shelf_name is None:
            return [_copy(book) for book in self._books.values()]
        self._stored_shelf(shelf_name)
        return [_copy(self._books[name]) for name in self._book_names_on(shelf_name)]

    def book(self, name: str) -> lib.Book:
        return _copy(self._stored_book(name))

    def add_book(self, shelf_name: str, book_id: str, book: lib.Book) -> lib.Book:
        """Store `book` on the shelf as {shelf}/books/{book_id}, or under a fresh id."""
        self._stored_shelf(shelf_name)
        name = f"{shelf_name}/books/{book_id or self._fresh_id(shelf_name + '/books/{}')}"
        if name in self._books:
            raise StatusError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"book {name!r} already exists",
                resource_info(BOOK_TYPE, name, "a book with this id already exists on the shelf"),
            )
        stored = _copy(book)
        stored.name = name
        self._books[name] = stored
        return _copy(stored)

    def replace_book(self, book: lib.Book) -> lib.Book:
        self._stored_book(book.name)
        self._books[book.name] = _copy(book)
        return _copy(book)

    def delete_book(self, name: str) -> None:
        self._stored_book(name)
        del self._books[name]
        self._covers.pop(name, None)

    # Covers.

    def cover(self, book_name: str) -> lib.BookCover:
        self._stored_book(book_name)
        cover = self._covers.get(book_name)
        if cover is None:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"book {book_name!r} has no cover",
                resource_info(COVER_TYPE, book_name + "/cover", "no cover was set for this book"),
            )
        return _copy(cover)

    def set_cover(self, book_name: str, cover: lib.BookCover) -> lib.BookCover:
        self._stored_book(book_name)
        self._covers[book_name] = _copy(cover)
        return _copy(cover)

    # Internals.

    def _stored_shelf(self, name: str) -> lib.Shelf:
        shelf = self._shelves.get(name)
        if shelf is None:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"shelf {name!r} not found",
                resource_info(SHELF_TYPE, name, "no such shelf"),
            )
        return shelf

    def _stored_book(self, name: str) -> lib.Book:
        book = self._books.get(name)
        if book is None:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"book {name!r} not found",
                resource_info(BOOK_TYPE, name, "no such book"),
            )
        return book

    def _book_names_on(self, shelf_name: str) -> list[str]:
        prefix = shelf_name + "/books/"
        return [name for name in self._books if name.startswith(prefix)]

    def _with_count(self, shelf: lib.Shelf) -> lib.Shelf:
        counted = _copy(shelf)
        counted.book_count = len(self._book_names_on(shelf.name))
        return counted

    def _fresh_id(self, name_format: str) -> str:
        """The next numeric id whose name is free; ids are shared by shelves and books, like a sequence."""
        while (
            name_format.format(self._next_id) in self._shelves
            or name_format.format(self._next_id) in self._books
        ):
            self._next_id += 1
        fresh = str(self._next_id)
        self._next_id += 1
        return fresh

    @classmethod
    def seeded(cls) -> LibraryStore:
        """Two shelves and four books (ids 1-4, all published, each with a cover); new ids start at 5."""
        store = cls()
        store.add_shelf("1", lib.Shelf(theme="Fantasy and science fiction"))
        store.add_shelf("2", lib.Shelf(theme="Poetry and essays"))
        for shelf_name, book_id, book in _catalogue():
            store.add_book(shelf_name, book_id, book)
            # A PNG signature and the id: bytes that are not UTF-8, so base64 handling shows.
            store.set_cover(
                f"{shelf_name}/books/{book_id}",
                lib.BookCover(image=b"\x89PNG\r\n\x1a\n" + book_id.encode(), mime_type="image/png"),
            )
        store._next_id = 5
        return store


def _catalogue() -> list[tuple[str, str, lib.Book]]:
    le_guin = lib.Author(name="Ursula K. Le Guin", email="ursula@example.org")

    def book(seeded: lib.Book) -> lib.Book:
        seeded.published = True
        seeded.checksum = hashlib.sha256(seeded.title.encode()).digest()[:8]
        return seeded

    return [
        (
            "shelves/1",
            "1",
            book(
                lib.Book(
                    title="The Left Hand of Darkness",
                    author=le_guin,
                    genre=lib.FICTION,
                    tags=["classic", "scifi"],
                    published_at=_timestamp(1969, 3, 1),
                    page_count=304,
                    labels={"lang": "en", "series": "hainish"},
                    print=lib.PrintDetails(isbn="978-0441478125", hardcover=True, weight_grams=410),
                    read_time=duration_pb2.Duration(seconds=8 * 3600 + 30 * 60),
                    rating=4.6,
                    copies_sold=1_000_000,
                    reviews=[
                        lib.Review(
                            reviewer="ana",
                            stars=5,
                            text="Cold and warm at once.",
                            create_time=_timestamp(2020, 1, 15),
                        ),
                        lib.Review(
                            reviewer="ben", stars=4, text="Slow start.", create_time=_timestamp(2021, 6, 2)
                        ),
                    ],
                    edition=1,
                    subtitle=wrappers_pb2.StringValue(value="A Hainish novel"),
                )
            ),
        ),
        (
            "shelves/1",
            "2",
            book(
                lib.Book(
                    title="A Wizard of Earthsea",
                    author=le_guin,
                    genre=lib.FICTION,
                    tags=["classic", "fantasy"],
                    published_at=_timestamp(1968, 11, 1),
                    page_count=183,
                    labels={"lang": "en", "series": "earthsea"},
                    ebook=lib.EbookDetails(file_format="epub", size_bytes=1_234_567, drm=False),
                    read_time=duration_pb2.Duration(seconds=5 * 3600),
                    rating=4.4,
                    copies_sold=5_000_000_000,  # above 2**32, so int64 handling in JSON shows
                )
            ),
        ),
        (
            "shelves/2",
            "3",
            book(
                lib.Book(
                    title="Leaves of Grass",
                    author=lib.Author(name="Walt Whitman"),
                    genre=lib.POETRY,
                    tags=["classic", "poetry"],
                    published_at=_timestamp(1855, 7, 4),
                    page_count=95,
                    labels={"lang": "en"},
                    print=lib.PrintDetails(isbn="978-0486456768", weight_grams=180),
                    rating=4.1,
                )
            ),
        ),
        (
            "shelves/2",
            "4",
            book(
                lib.Book(
                    title="A Room of One's Own",
                    author=lib.Author(name="Virginia Woolf", email="vw@example.org"),
                    genre=lib.NONFICTION,
                    tags=["classic", "essay"],
                    published_at=_timestamp(1929, 10, 24),
                    page_count=112,
                    labels={"lang": "en"},
                    ebook=lib.EbookDetails(file_format="pdf", size_bytes=800_000, drm=True),
                    rating=4.3,
                )
            ),
        ),
    ]
