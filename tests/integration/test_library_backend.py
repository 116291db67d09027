"""The demo library backend over real sockets: CRUD, filters, and each error with its google.rpc details.

Every test gets a freshly seeded backend (shelves/1 and shelves/2, books 1-4) on an ephemeral
127.0.0.1 port and a grpc.aio client; details are decoded from the `grpc-status-details-bin` trailer,
as the gateway will decode them. Serving (health, reflection, shutdown) is in `test_backends.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from library.v1 import library_pb2 as lib
from library.v1 import library_pb2_grpc

from tests.support import library_backend
from tests.support.rich_status import status_from_metadata

_Detail = TypeVar("_Detail", bound=Message)


@pytest.fixture
async def stub() -> AsyncIterator[library_pb2_grpc.LibraryServiceStub]:
    running = await library_backend.serve()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            yield library_pb2_grpc.LibraryServiceStub(channel)
    finally:
        await running.stop(None)


async def fails(call: Awaitable[object], code: grpc.StatusCode) -> status_pb2.Status:
    """Await `call`, expect `code`, and return the google.rpc.Status from its trailer."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == code, error.details()
    status = status_from_metadata(error.trailing_metadata())
    assert status is not None, "no grpc-status-details-bin trailer"
    assert (status.code, status.message) == (code.value[0], error.details())
    return status


def detail(status: status_pb2.Status, kind: type[_Detail]) -> _Detail:
    (packed,) = [any_ for any_ in status.details if any_.Is(kind.DESCRIPTOR)]
    unpacked = kind()
    packed.Unpack(unpacked)
    return unpacked


def violations(status: status_pb2.Status) -> dict[str, str]:
    return {v.field: v.description for v in detail(status, error_details_pb2.BadRequest).field_violations}


# Shelves.


async def test_list_shelves_pages_through_the_seeded_shelves(
    stub: library_pb2_grpc.LibraryServiceStub,
) -> None:
    first = await stub.ListShelves(lib.ListShelvesRequest(page_size=1))
    assert [(s.name, s.book_count) for s in first.shelves] == [("shelves/1", 2)]
    second = await stub.ListShelves(lib.ListShelvesRequest(page_size=1, page_token=first.next_page_token))
    assert [s.name for s in second.shelves] == ["shelves/2"]
    assert second.next_page_token == ""

    status = await fails(
        stub.ListShelves(lib.ListShelvesRequest(page_token="x")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(violations(status)) == {"page_token"}


async def test_shelf_crud(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    created = await stub.CreateShelf(
        lib.CreateShelfRequest(shelf=lib.Shelf(theme="Travel"), shelf_id="travel")
    )
    assert created == lib.Shelf(name="shelves/travel", theme="Travel", book_count=0)
    assert await stub.GetShelf(lib.GetShelfRequest(name="shelves/travel")) == created

    updated = await stub.UpdateShelf(
        lib.UpdateShelfRequest(shelf=lib.Shelf(name="shelves/travel", theme="Maps"))
    )
    assert updated.theme == "Maps"

    await stub.DeleteShelf(lib.DeleteShelfRequest(name="shelves/travel"))
    status = await fails(stub.GetShelf(lib.GetShelfRequest(name="shelves/travel")), grpc.StatusCode.NOT_FOUND)
    assert detail(status, error_details_pb2.ResourceInfo).resource_name == "shelves/travel"

    unnamed = await stub.CreateShelf(lib.CreateShelfRequest(shelf=lib.Shelf(theme="Unnamed")))
    assert unnamed.name == "shelves/5"


async def test_shelf_errors(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    taken = lib.CreateShelfRequest(shelf=lib.Shelf(theme="Again"), shelf_id="1")
    status = await fails(stub.CreateShelf(taken), grpc.StatusCode.ALREADY_EXISTS)
    info = detail(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("library.v1.Shelf", "shelves/1")

    bad = lib.CreateShelfRequest(shelf=lib.Shelf(theme=" "), shelf_id="Not An Id")
    status = await fails(stub.CreateShelf(bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(status)) == {"shelf.theme", "shelf_id"}

    status = await fails(
        stub.GetShelf(lib.GetShelfRequest(name="shelfs/1")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(violations(status)) == {"name"}
    missing = lib.UpdateShelfRequest(shelf=lib.Shelf(name="shelves/9", theme="x"))
    await fails(stub.UpdateShelf(missing), grpc.StatusCode.NOT_FOUND)


async def test_delete_shelf_with_books_needs_force(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    status = await fails(
        stub.DeleteShelf(lib.DeleteShelfRequest(name="shelves/1")), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert detail(status, error_details_pb2.PreconditionFailure).violations[0].subject == "shelves/1"

    await stub.DeleteShelf(lib.DeleteShelfRequest(name="shelves/1", force=True))
    await fails(stub.GetBook(lib.GetBookRequest(name="shelves/1/books/1")), grpc.StatusCode.NOT_FOUND)
    await fails(stub.ListBooks(lib.ListBooksRequest(parent="shelves/1")), grpc.StatusCode.NOT_FOUND)


# Books.


async def test_get_book_returns_the_seeded_book(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    book = await stub.GetBook(lib.GetBookRequest(name="shelves/1/books/1"))
    assert (book.title, book.author.name, book.genre) == (
        "The Left Hand of Darkness",
        "Ursula K. Le Guin",
        lib.FICTION,
    )
    assert book.WhichOneof("format") == "print" and book.print.hardcover
    assert book.published_at.ToJsonString() == "1969-03-01T00:00:00Z"
    assert book.HasField("edition") and book.subtitle.value == "A Hainish novel"
    assert len(book.checksum) == 8 and len(book.reviews) == 2 and book.published

    ebook = await stub.GetBook(lib.GetBookRequest(name="shelves/1/books/2"))
    assert (
        ebook.WhichOneof("format") == "ebook" and ebook.copies_sold > 2**32 and not ebook.HasField("edition")
    )


async def test_get_book_errors(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    status = await fails(
        stub.GetBook(lib.GetBookRequest(name="shelves/1/books/99")), grpc.StatusCode.NOT_FOUND
    )
    info = detail(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("library.v1.Book", "shelves/1/books/99")

    status = await fails(stub.GetBook(lib.GetBookRequest(name="books/1")), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(status)) == {"name"}


async def test_create_book_through_either_binding(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    by_parent = await stub.CreateBook(
        lib.CreateBookRequest(
            parent="shelves/2", book=lib.Book(title="Ariel", genre=lib.POETRY, published=True)
        )
    )
    assert by_parent.name == "shelves/2/books/5"
    assert not by_parent.published, "published is output only"

    by_ids = await stub.CreateBook(
        lib.CreateBookRequest(shelf_id="2", book_id="odes", book=lib.Book(title="Odes"))
    )
    assert by_ids.name == "shelves/2/books/odes"
    assert await stub.GetBook(lib.GetBookRequest(name="shelves/2/books/odes")) == by_ids
    shelf = await stub.GetShelf(lib.GetShelfRequest(name="shelves/2"))
    assert shelf.book_count == 4


async def test_create_book_errors(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    taken = lib.CreateBookRequest(parent="shelves/1", book_id="1", book=lib.Book(title="Again"))
    status = await fails(stub.CreateBook(taken), grpc.StatusCode.ALREADY_EXISTS)
    assert detail(status, error_details_pb2.ResourceInfo).resource_name == "shelves/1/books/1"

    invalid = lib.CreateBookRequest(parent="shelves/1", book=lib.Book(title="", page_count=-1, rating=7))
    status = await fails(stub.CreateBook(invalid), grpc.StatusCode.INVALID_ARGUMENT)
    assert violations(status) == {
        "book.title": "must not be empty",
        "book.page_count": "must not be negative",
        "book.rating": "must be between 0 and 5",
    }

    conflicting = lib.CreateBookRequest(parent="shelves/1", shelf_id="2", book=lib.Book(title="t"))
    status = await fails(stub.CreateBook(conflicting), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(status)) == {"shelf_id"}
    no_shelf = lib.CreateBookRequest(book=lib.Book(title="t"))
    assert set(violations(await fails(stub.CreateBook(no_shelf), grpc.StatusCode.INVALID_ARGUMENT))) == {
        "parent"
    }

    orphan = lib.CreateBookRequest(parent="shelves/9", book=lib.Book(title="t"))
    await fails(stub.CreateBook(orphan), grpc.StatusCode.NOT_FOUND)


async def test_list_books_applies_every_filter(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    async def names(request: lib.ListBooksRequest) -> list[str]:
        return [book.name for book in (await stub.ListBooks(request)).books]

    after_1900 = timestamp_pb2.Timestamp()
    after_1900.FromJsonString("1900-01-01T00:00:00Z")
    by_author = lib.Filter(author=lib.Author(name="le guin"), min_rating=4.5)
    cases = [
        (lib.ListBooksRequest(parent="shelves/1"), ["shelves/1/books/1", "shelves/1/books/2"]),
        (lib.ListBooksRequest(parent="shelves/1", tags=["classic", "fantasy"]), ["shelves/1/books/2"]),
        (lib.ListBooksRequest(parent="shelves/2", genre=lib.POETRY), ["shelves/2/books/3"]),
        (lib.ListBooksRequest(parent="shelves/2", published_after=after_1900), ["shelves/2/books/4"]),
        (lib.ListBooksRequest(parent="shelves/1", filter=by_author), ["shelves/1/books/1"]),
        (lib.ListBooksRequest(parent="shelves/1", labels={"series": "earthsea"}), ["shelves/1/books/2"]),
        (
            lib.ListBooksRequest(parent="shelves/1", filter=lib.Filter(min_page_count=200)),
            ["shelves/1/books/1"],
        ),
        (lib.ListBooksRequest(parent="shelves/1", page_size=1), ["shelves/1/books/1"]),
    ]
    for request, expected in cases:
        assert await names(request) == expected, request


async def test_update_book_with_and_without_mask(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    name = "shelves/1/books/2"
    patch = lib.Book(name=name, title="Earthsea", page_count=1, author=lib.Author(name="U. K. Le Guin"))
    masked = await stub.UpdateBook(
        lib.UpdateBookRequest(
            book=patch, update_mask=field_mask_pb2.FieldMask(paths=["title", "author.name"])
        )
    )
    assert (masked.title, masked.page_count, masked.author.name) == ("Earthsea", 183, "U. K. Le Guin")
    assert masked.author.email == "ursula@example.org", "a nested mask path leaves sibling fields alone"

    unmasked = await stub.UpdateBook(lib.UpdateBookRequest(book=lib.Book(name=name, tags=["new"])))
    assert (unmasked.title, list(unmasked.tags)) == ("Earthsea", ["new"])
    assert await stub.GetBook(lib.GetBookRequest(name=name)) == unmasked


@pytest.mark.parametrize(
    ("paths", "book", "field"),
    [
        (["nope"], lib.Book(), "update_mask"),
        (["published"], lib.Book(published=False), "update_mask"),
        (["title"], lib.Book(title=""), "book.title"),
    ],
)
async def test_update_book_errors(
    stub: library_pb2_grpc.LibraryServiceStub, paths: list[str], book: lib.Book, field: str
) -> None:
    book.name = "shelves/1/books/1"
    request = lib.UpdateBookRequest(book=book, update_mask=field_mask_pb2.FieldMask(paths=paths))
    status = await fails(stub.UpdateBook(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(status)) == {field}


async def test_delete_book(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    await stub.DeleteBook(lib.DeleteBookRequest(name="shelves/2/books/3"))
    await fails(stub.GetBook(lib.GetBookRequest(name="shelves/2/books/3")), grpc.StatusCode.NOT_FOUND)
    await fails(stub.DeleteBook(lib.DeleteBookRequest(name="shelves/2/books/3")), grpc.StatusCode.NOT_FOUND)


async def test_publish_book_once(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    draft = await stub.CreateBook(lib.CreateBookRequest(parent="shelves/1", book=lib.Book(title="Draft")))
    when = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    published = await stub.PublishBook(lib.PublishBookRequest(name=draft.name, publish_time=when, note="v1"))
    assert published.published and published.published_at == when
    assert published.labels["publish-note"] == "v1"

    status = await fails(
        stub.PublishBook(lib.PublishBookRequest(name=draft.name)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert detail(status, error_details_pb2.PreconditionFailure).violations[0].type == "PUBLISHED"


# Covers and search.


async def test_book_cover_round_trip(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    seeded = await stub.GetBookCover(lib.GetBookCoverRequest(name="shelves/1/books/1"))
    assert seeded.cover.image.startswith(b"\x89PNG") and seeded.cover.mime_type == "image/png" and seeded.etag

    cover = lib.BookCover(image=b"\xff\xd8\xff", mime_type="image/jpeg")
    assert await stub.SetBookCover(lib.SetBookCoverRequest(name="shelves/1/books/1", cover=cover)) == cover
    assert (await stub.GetBookCover(lib.GetBookCoverRequest(name="shelves/1/books/1"))).cover == cover

    bad = lib.SetBookCoverRequest(name="shelves/1/books/1", cover=lib.BookCover(mime_type="text/plain"))
    status = await fails(stub.SetBookCover(bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(status)) == {"cover.image", "cover.mime_type"}

    bare = await stub.CreateBook(lib.CreateBookRequest(parent="shelves/1", book=lib.Book(title="Bare")))
    status = await fails(
        stub.GetBookCover(lib.GetBookCoverRequest(name=bare.name)), grpc.StatusCode.NOT_FOUND
    )
    assert detail(status, error_details_pb2.ResourceInfo).resource_type == "library.v1.BookCover"


async def test_search_books_across_shelves(stub: library_pb2_grpc.LibraryServiceStub) -> None:
    found = await stub.SearchBooks(lib.SearchBooksRequest(query="LE GUIN", page_size=1))
    assert ([b.name for b in found.books], found.total_size) == (["shelves/1/books/1"], 2)
    assert found.next_page_token

    found = await stub.SearchBooks(lib.SearchBooksRequest(query="a", filter=lib.Filter(min_rating=4.35)))
    assert sorted(b.title for b in found.books) == ["A Wizard of Earthsea", "The Left Hand of Darkness"]
