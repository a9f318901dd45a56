"""The page-cache simulator of the page-cache benchmark: the kernel's two-list behaviour that
decides whether a backfill evicts hot pages."""

from bench.cachesim import BYPASS, DROPPED, READ, Access, TwoListCache, replay


def stream(cache: TwoListCache, file: str, pages: int) -> None:
    for page in range(pages):
        cache.touch((file, page))


def test_pages_read_twice_survive_a_stream_larger_than_the_cache():
    cache = TwoListCache(100)
    for _ in range(2):
        stream(cache, "hot", 30)
    stream(cache, "backlog", 1000)
    assert all(("hot", page) in cache for page in range(30))
    assert len(cache) == 100


def test_pages_read_once_are_evicted_by_the_stream():
    cache = TwoListCache(100)
    stream(cache, "fresh", 30)
    stream(cache, "backlog", 1000)
    assert not any(("fresh", page) in cache for page in range(30))


def test_reclaim_keeps_the_active_list_no_larger_than_the_inactive_one():
    cache = TwoListCache(100)
    for _ in range(3):
        stream(cache, "hot", 90)
    stream(cache, "backlog", 20)
    assert len(cache.active) <= len(cache.inactive)
    assert len(cache) == 100


def test_a_read_of_a_cached_page_is_a_hit_and_a_first_read_a_miss():
    cache = TwoListCache(10)
    assert cache.touch(("f", 0)) is False
    assert cache.touch(("f", 0)) is True


def test_replay_counts_hot_hits_and_honours_bypass_and_dropped_reads():
    accesses = [
        Access(0.0, "hot", 0, 4),                              # written/read in: now cached
        Access(1.0, "backlog", 0, 50, kind=BYPASS),            # O_DIRECT: touches nothing
        Access(2.0, "backlog", 50, 50, kind=DROPPED),          # read and dropped again
        Access(3.0, "hot", 0, 4, hot=True),
        Access(4.0, "backlog", 100, 50, kind=READ),            # a plain read: stays, evicts
        Access(5.0, "hot", 0, 4, hot=True),
    ]
    outcomes, cached = replay(accesses, capacity_pages=20, snapshot_time=3.5)
    assert [(o.time, o.resident, o.pages) for o in outcomes] == [(3.0, 4, 4), (5.0, 4, 4)]
    assert cached == {"hot": 4}          # at 3.5 s: nothing of the backlog
    _, at_end = replay(accesses, capacity_pages=20)
    assert at_end["backlog"] == 16       # the plain read filled what the hot pages left


def test_fresh_pages_are_lost_to_a_plain_backfill_but_not_to_a_bypassing_one():
    def run(kind: str) -> int:
        accesses = [Access(0.0, "tail", 0, 10),                                 # the producer's append
                    Access(1.0, "backlog", 0, 500, kind=kind),
                    Access(2.0, "tail", 0, 10, hot=True)]                       # a consumer, later
        outcomes, _ = replay(accesses, capacity_pages=100)
        return outcomes[0].resident
    assert run(READ) == 0
    assert run(BYPASS) == 10
