"""The demo library.v1.LibraryService backend: every google.api.http mapping, served behind the gateway.

Owns the servicer for `protos/library/v1/library.proto`: it checks requests, resolves names through its
own `LibraryStore` (seeded: shelves/1 and shelves/2, books 1-4), and answers with real gRPC errors,
each carrying a google.rpc.Status in `grpc-status-details-bin`:
  INVALID_ARGUMENT     with BadRequest field violations: malformed names or ids, empty shelf theme or
                       book title, negative page_count, rating outside [0, 5], bad page_size or
                       page_token, unknown or immutable update_mask paths, a cover that is not image/*.
  NOT_FOUND            with ResourceInfo: a missing shelf, book or cover.
  ALREADY_EXISTS       with ResourceInfo: CreateShelf or CreateBook with an id that is taken.
  FAILED_PRECONDITION  with PreconditionFailure: DeleteShelf on a shelf with books and no `force`,
                       PublishBook on a published book.
ListBooks and SearchBooks read every filter the proto declares, so a gateway test can see which query
parameters arrived; SearchBooks ignores shelves. Page tokens are offsets.

Run it with `python -m tests.support.library_backend [--address 127.0.0.1:50062]`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TypeVar

import grpc

import protos

# The generated stubs live in protos/_gen, which is importable only after this call.
protos.add_generated_path()

from google.protobuf import empty_pb2, field_mask_pb2, timestamp_pb2
from library.v1 import library_pb2 as lib
from library.v1 import library_pb2_grpc

from tests.support.library_store import BOOK_NAME, ID_PATTERN, SHELF_NAME, LibraryStore
from tests.support.rich_status import (
    StatusError,
    bad_request,
    precondition_failure,
    translate_status_errors,
)
from tests.support.serving import RunningServer, run_main, start_server

SERVICE_NAME = lib.DESCRIPTOR.services_by_name["LibraryService"].full_name
DEFAULT_ADDRESS = "127.0.0.1:50062"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# Output-only or identifying Book fields, which an update_mask may not name.
IMMUTABLE_BOOK_FIELDS = frozenset({"name", "published"})

_Item = TypeVar("_Item")


def _invalid(violations: dict[str, str]) -> StatusError:
    fields = ", ".join(violations)
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid {fields}", bad_request(violations))


def _check(violations: dict[str, str]) -> None:
    if violations:
        raise _invalid(violations)


def _check_shelf_name(field: str, name: str) -> None:
    if not SHELF_NAME.fullmatch(name):
        raise _invalid({field: f"{name!r} is not a shelf name (shelves/{{shelf}})"})


def _check_book_name(field: str, name: str) -> None:
    if not BOOK_NAME.fullmatch(name):
        raise _invalid({field: f"{name!r} is not a book name (shelves/{{shelf}}/books/{{book}})"})


def _id_violation(field: str, value: str) -> dict[str, str]:
    if value and not ID_PATTERN.fullmatch(value):
        return {field: f"{value!r} is not an id: lower-case letters, digits and '-', at most 63"}
    return {}


def _book_violations(book: lib.Book) -> dict[str, str]:
    """What is wrong with `book`, keyed by field path in a request whose `book` field it is."""
    violations: dict[str, str] = {}
    if not book.title.strip():
        violations["book.title"] = "must not be empty"
    if book.page_count < 0:
        violations["book.page_count"] = "must not be negative"
    if not 0.0 <= book.rating <= 5.0:
        violations["book.rating"] = "must be between 0 and 5"
    return violations


def _page(items: Sequence[_Item], page_size: int, page_token: str) -> tuple[list[_Item], str]:
    """One page of `items` from the offset in `page_token`, and the token of the next page ("" at the end)."""
    violations: dict[str, str] = {}
    if page_size < 0:
        violations["page_size"] = "must not be negative"
    if page_token and not page_token.isdigit():
        violations["page_token"] = "is not a token this server issued"
    _check(violations)
    start = int(page_token or 0)
    end = start + min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return list(items[start:end]), str(end) if end < len(items) else ""


def _stamp(stamp: timestamp_pb2.Timestamp) -> tuple[int, int]:
    return (stamp.seconds, stamp.nanos)


def _matches_filter(book: lib.Book, book_filter: lib.Filter) -> bool:
    author = book_filter.author
    if author.name and author.name.casefold() not in book.author.name.casefold():
        return False
    if author.email and author.email.casefold() != book.author.email.casefold():
        return False
    return book.rating >= book_filter.min_rating and book.page_count >= book_filter.min_page_count


def _matches_list(book: lib.Book, request: lib.ListBooksRequest) -> bool:
    if not set(request.tags) <= set(book.tags):
        return False
    if request.genre != lib.GENRE_UNSPECIFIED and book.genre != request.genre:
        return False
    if request.HasField("published_after") and not (
        book.HasField("published_at") and _stamp(book.published_at) > _stamp(request.published_after)
    ):
        return False
    if any(book.labels.get(key) != value for key, value in request.labels.items()):
        return False
    return _matches_filter(book, request.filter)


def _matches_query(book: lib.Book, query: str) -> bool:
    needle = query.casefold()
    return needle in book.title.casefold() or needle in book.author.name.casefold()


class LibraryService(library_pb2_grpc.LibraryServiceServicer):
    """Shelves and books over one store; handlers fail by raising StatusError, which becomes an abort."""

    def __init__(self, store: LibraryStore) -> None:
        self._store = store

    @translate_status_errors
    async def ListShelves(
        self, request: lib.ListShelvesRequest, context: grpc.aio.ServicerContext
    ) -> lib.ListShelvesResponse:
        shelves, next_token = _page(self._store.shelves(), request.page_size, request.page_token)
        return lib.ListShelvesResponse(shelves=shelves, next_page_token=next_token)

    @translate_status_errors
    async def CreateShelf(
        self, request: lib.CreateShelfRequest, context: grpc.aio.ServicerContext
    ) -> lib.Shelf:
        violations = _id_violation("shelf_id", request.shelf_id)
        if not request.shelf.theme.strip():
            violations["shelf.theme"] = "must not be empty"
        _check(violations)
        return self._store.add_shelf(request.shelf_id, request.shelf)

    @translate_status_errors
    async def GetShelf(self, request: lib.GetShelfRequest, context: grpc.aio.ServicerContext) -> lib.Shelf:
        _check_shelf_name("name", request.name)
        return self._store.shelf(request.name)

    @translate_status_errors
    async def UpdateShelf(
        self, request: lib.UpdateShelfRequest, context: grpc.aio.ServicerContext
    ) -> lib.Shelf:
        _check_shelf_name("shelf.name", request.shelf.name)
        if not request.shelf.theme.strip():
            raise _invalid({"shelf.theme": "must not be empty"})
        return self._store.replace_shelf(request.shelf)

    @translate_status_errors
    async def DeleteShelf(
        self, request: lib.DeleteShelfRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        _check_shelf_name("name", request.name)
        self._store.delete_shelf(request.name, request.force)
        return empty_pb2.Empty()

    @translate_status_errors
    async def ListBooks(
        self, request: lib.ListBooksRequest, context: grpc.aio.ServicerContext
    ) -> lib.ListBooksResponse:
        _check_shelf_name("parent", request.parent)
        matching = [book for book in self._store.books(request.parent) if _matches_list(book, request)]
        books, next_token = _page(matching, request.page_size, request.page_token)
        return lib.ListBooksResponse(books=books, next_page_token=next_token)

    @translate_status_errors
    async def CreateBook(self, request: lib.CreateBookRequest, context: grpc.aio.ServicerContext) -> lib.Book:
        # The first binding fills `parent`, the second `shelf_id` (and `book_id`); either names the shelf.
        parent = request.parent or (f"shelves/{request.shelf_id}" if request.shelf_id else "")
        violations = _id_violation("book_id", request.book_id) | _book_violations(request.book)
        if request.parent and request.shelf_id and request.parent != f"shelves/{request.shelf_id}":
            violations["shelf_id"] = f"names another shelf than parent {request.parent!r}"
        elif not SHELF_NAME.fullmatch(parent):
            field = "parent" if request.parent or not request.shelf_id else "shelf_id"
            violations[field] = f"{parent or request.shelf_id!r} does not name a shelf (shelves/{{shelf}})"
        _check(violations)
        book = lib.Book()
        book.CopyFrom(request.book)
        book.published = False
        return self._store.add_book(parent, request.book_id, book)

    @translate_status_errors
    async def GetBook(self, request: lib.GetBookRequest, context: grpc.aio.ServicerContext) -> lib.Book:
        _check_book_name("name", request.name)
        return self._store.book(request.name)

    @translate_status_errors
    async def UpdateBook(self, request: lib.UpdateBookRequest, context: grpc.aio.ServicerContext) -> lib.Book:
        _check_book_name("book.name", request.book.name)
        paths = list(request.update_mask.paths) or [
            field.name for field, _ in request.book.ListFields() if field.name not in IMMUTABLE_BOOK_FIELDS
        ]
        mask = field_mask_pb2.FieldMask(paths=paths)
        if not mask.IsValidForDescriptor(lib.Book.DESCRIPTOR):
            raise _invalid({"update_mask": f"{', '.join(paths)} holds a path that is not a Book field"})
        if frozen := sorted({path.split(".")[0] for path in paths} & IMMUTABLE_BOOK_FIELDS):
            raise _invalid({"update_mask": f"{', '.join(frozen)} cannot be updated"})
        book = self._store.book(request.book.name)
        mask.MergeMessage(request.book, book, replace_message_field=True, replace_repeated_field=True)
        _check(_book_violations(book))
        return self._store.replace_book(book)

    @translate_status_errors
    async def DeleteBook(
        self, request: lib.DeleteBookRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        _check_book_name("name", request.name)
        self._store.delete_book(request.name)
        return empty_pb2.Empty()

    @translate_status_errors
    async def PublishBook(
        self, request: lib.PublishBookRequest, context: grpc.aio.ServicerContext
    ) -> lib.Book:
        _check_book_name("name", request.name)
        book = self._store.book(request.name)
        if book.published:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"book {request.name!r} is already published",
                precondition_failure("PUBLISHED", request.name, "the book is already published"),
            )
        book.published = True
        if request.HasField("publish_time"):
            book.published_at.CopyFrom(request.publish_time)
        else:
            book.published_at.FromNanoseconds(time.time_ns())
        if request.note:
            book.labels["publish-note"] = request.note
        return self._store.replace_book(book)

    @translate_status_errors
    async def GetBookCover(
        self, request: lib.GetBookCoverRequest, context: grpc.aio.ServicerContext
    ) -> lib.GetBookCoverResponse:
        _check_book_name("name", request.name)
        cover = self._store.cover(request.name)
        return lib.GetBookCoverResponse(cover=cover, etag=hashlib.sha256(cover.image).hexdigest()[:16])

    @translate_status_errors
    async def SetBookCover(
        self, request: lib.SetBookCoverRequest, context: grpc.aio.ServicerContext
    ) -> lib.BookCover:
        _check_book_name("name", request.name)
        violations: dict[str, str] = {}
        if not request.cover.image:
            violations["cover.image"] = "must not be empty"
        if not request.cover.mime_type.startswith("image/"):
            violations["cover.mime_type"] = f"{request.cover.mime_type!r} is not an image/* type"
        _check(violations)
        return self._store.set_cover(request.name, request.cover)

    @translate_status_errors
    async def SearchBooks(
        self, request: lib.SearchBooksRequest, context: grpc.aio.ServicerContext
    ) -> lib.SearchBooksResponse:
        matching = [
            book
            for book in self._store.books()
            if _matches_query(book, request.query) and _matches_filter(book, request.filter)
        ]
        books, next_token = _page(matching, request.page_size, request.page_token)
        return lib.SearchBooksResponse(books=books, next_page_token=next_token, total_size=len(matching))


async def serve(address: str = "127.0.0.1:0", store: LibraryStore | None = None) -> RunningServer:
    """Start the library backend with health and reflection over `store` (a freshly seeded one by default)."""
    servicer = LibraryService(store if store is not None else LibraryStore.seeded())

    def register(server: grpc.aio.Server) -> None:
        library_pb2_grpc.add_LibraryServiceServicer_to_server(servicer, server)

    return await start_server(address, register, (SERVICE_NAME,))


async def start(address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """Start a freshly seeded library backend on `address` (port 0 picks one); return the server and port."""
    running = await serve(address)
    return running.server, running.port


def main() -> None:
    run_main("Portcullis demo library.v1.LibraryService backend", DEFAULT_ADDRESS, serve)


if __name__ == "__main__":
    main()
