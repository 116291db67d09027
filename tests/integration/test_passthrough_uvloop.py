"""The passthrough relay's tests again on uvloop, the event loop `portcullis serve` runs.

The other passthrough modules run on asyncio's own loop, as every integration test does. uvloop
differs where the relay leans on it: it looks a protocol's `data_received` up once, when the
protocol is set (the relay's is the leg's `feed` itself), and it calls `pause_writing` and
`resume_writing` from its own write path. So the frame, screening, backpressure, half-open and hand-over tests
run here too (pytest collects the imported test functions in this module, with its loop). The loop
is chosen by overriding pytest-asyncio's `event_loop_policy` fixture, deprecated in favour of a
`pytest_asyncio_loop_factories` hook, which only a conftest can hold and which would apply to every
test; its warning is silenced here.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from .test_passthrough_frames import (  # noqa: F401  (tests and fixtures collected here again)
    block_word,
    test_fragmented_message_screened_whole,
    test_frames_split_anywhere_pass_whole,
    test_invalid_frames_close_with_1002,
    test_oversized_frame_refused_from_its_header,
    test_silent_backend_is_found_half_open,
    test_slow_backend_slows_the_client,
    test_slow_client_slows_the_backend,
    test_text_messages_pass_as_raw_frames,
)
from .test_passthrough_relay import (  # noqa: F401
    gw,
    test_closed_sockets_are_forgotten_by_the_server,
    test_frames_sent_with_the_upgrade_request_arrive,
    test_lengths_either_side_of_the_7_bit_limit,
    test_message_sizes_counted_in_their_buckets,
    test_size_limit_below_the_short_frame_length,
)

pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy" fixture')


@pytest.fixture
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    return uvloop.EventLoopPolicy()


async def test_the_loop_is_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
