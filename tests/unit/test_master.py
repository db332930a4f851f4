"""The master in-process: os.fork patched (the parent side runs for real, with pipes and the board),
signals dispatched directly, exits handed to on_exit(). One test forks for real, to show that a
signal sent in the window right after a fork is not lost."""

import os
import selectors
import signal
import socket
import time

import pytest

from fastcluster import master as master_module
from fastcluster.config import Config, parse_bind
from fastcluster.errors import EXIT_APP_LOAD_ERROR
from fastcluster.master import Master

pytestmark = pytest.mark.timeout(60)


class Forks:
    """Stands in for os.fork in the parent: hands out pids, or fails."""

    def __init__(self):
        self.next_pid = 40000
        self.fail = None

    def __call__(self):
        if self.fail is not None:
            raise self.fail
        self.next_pid += 1
        return self.next_pid


@pytest.fixture
def rig(monkeypatch):
    forks = Forks()
    sent = []
    monkeypatch.setattr(os, "fork", forks)
    monkeypatch.setattr(master_module, "_kill", lambda pid, sig: sent.append((pid, sig)))
    m = Master(Config(bind=parse_bind("127.0.0.1:0"), workers=2, loop="python", graceful_timeout=5.0))
    m.listener = socket.socket()
    m.listener.bind(("127.0.0.1", 0))
    m.listener.listen()
    m.url = "http://test"
    m.selector = selectors.DefaultSelector()
    m.wake_r, m.wake_w = socket.socketpair()
    m.forks, m.sent = forks, sent
    yield m
    for rec in list(m.workers.values()):
        m._unwatch(rec)
    m.selector.close()
    m.listener.close()
    m.wake_r.close()
    m.wake_w.close()


def ready(m, rec):
    m.on_status(rec, b"R\n")


def start(m):
    """Boot: the first worker, then once it is ready the others."""
    m._maintain()
    ready(m, next(iter(m.workers.values())))
    m._maintain()
    for rec in list(m.workers.values()):
        if rec.state == "spawning":
            ready(m, rec)
    return sorted(m.workers.values(), key=lambda r: r.slot)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_a_failed_fork_is_logged_backed_off_and_leaks_nothing(rig, caplog):
    first, second = start(rig)
    fds, free = open_fds(), sorted(rig.board.free)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    rig.forks.fail = OSError(11, "Resource temporarily unavailable")
    second.born_at -= master_module.STABLE_AFTER
    rig.on_exit(second.pid, -9)                  # a worker that ran fine dies, and no new one can be forked
    rig._maintain()
    assert rig.respawn_at[2] > time.monotonic()
    assert "cannot start worker 2: Resource temporarily unavailable; trying again in 0.1 s" in caplog.text
    assert open_fds() == fds - 1                 # the dead worker's pipe is closed; no new one leaked
    assert sorted(rig.board.free) == sorted(free + [second.board_index])   # its slot and the failed one's
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask           # the fork's block lifted
    rig.respawn_at[2] = 0.0
    rig._maintain()                              # fails again: twice the wait
    assert 0.15 < rig.respawn_at[2] - time.monotonic() <= 0.2
    assert list(rig.workers) == [first.pid]      # and the master serves on with the worker it has
    rig.forks.fail = None
    rig.respawn_at[2] = 0.0
    rig._maintain()
    assert len(rig.workers) == 2


def test_a_rollout_whose_replacement_cannot_be_forked_is_aborted(rig, caplog):
    first, second = start(rig)
    rig.forks.fail = OSError(12, "Cannot allocate memory")
    rig.dispatch(signal.SIGUSR2)
    assert "rolling restart aborted" in caplog.text
    assert not rig.rollout.active and not first.recycling and not second.recycling
    assert rig.sent == [] and set(rig.workers) == {first.pid, second.pid}
    assert 1 not in rig.respawn_at and 2 not in rig.respawn_at   # nothing to respawn: both still serve


def test_a_rolling_restart_replaces_one_worker_at_a_time(rig):
    first, second = start(rig)
    rig.dispatch(signal.SIGUSR2)
    assert rig.generation == 2
    new1 = rig.rollout.replacing
    assert new1.slot == 1 and new1.replaces == first.pid and rig.sent == []   # the old one serves on
    assert len(rig.workers) == 3
    ready(rig, new1)
    assert rig.sent == [(first.pid, signal.SIGTERM)]                          # now it drains
    new2 = rig.rollout.replacing
    assert new2.slot == 2 and new2.replaces == second.pid
    ready(rig, new2)
    assert rig.sent[-1] == (second.pid, signal.SIGTERM) and not rig.rollout.active
    rig.on_exit(first.pid, 0)
    rig.on_exit(second.pid, 0)
    snapshot = rig.collect()
    assert snapshot.restarts["rollout"] == 2 and snapshot.generation == 2
    assert [row.pid for row in snapshot.workers] == [new1.pid, new2.pid]


def test_a_replacement_that_dies_aborts_the_rollout(rig, caplog):
    first, second = start(rig)
    rig.dispatch(signal.SIGUSR2)
    rep = rig.rollout.replacing
    rig.on_exit(rep.pid, 1)
    assert "rolling restart aborted: its replacement worker 1" in caplog.text
    assert not rig.rollout.active and rig.sent == []
    assert set(rig.workers) == {first.pid, second.pid}
    # the worker it was to replace can still be replaced later (it asks, at its --max-requests)
    assert not first.recycling
    rig.on_status(first, b"X max-requests\n")
    assert rig.rollout.replacing is not None and rig.rollout.replacing.replaces == first.pid


def test_early_deaths_back_off_and_a_stable_worker_resets_the_count(rig):
    start(rig)
    delays = []
    for _ in range(4):
        rec = next(r for r in rig.workers.values() if r.slot == 2)
        rig.on_exit(rec.pid, 1)
        delays.append(round(rig.respawn_at.get(2, time.monotonic()) - time.monotonic(), 1))
        rig.respawn_at[2] = 0.0
        rig._maintain()
    assert delays == [0.0, 0.1, 0.2, 0.4]
    rec = next(r for r in rig.workers.values() if r.slot == 2)
    rec.born_at -= master_module.STABLE_AFTER
    rig.on_exit(rec.pid, 1)
    assert 2 not in rig.failures and 2 not in rig.respawn_at


def test_an_app_that_fails_to_load_stops_the_master_with_its_code(rig):
    rig._maintain()
    (rec,) = rig.workers.values()
    rig.on_exit(rec.pid, EXIT_APP_LOAD_ERROR)
    assert rig.stopping and rig.exit_code == EXIT_APP_LOAD_ERROR


def test_signals_dispatch_through_the_table(rig):
    first, second = start(rig)
    rig.dispatch(signal.SIGTTIN)
    assert rig.target == 3
    rig._maintain()
    assert len(rig.workers) == 3
    rig.dispatch(signal.SIGTTOU)
    rig._maintain()
    third = next(r for r in rig.workers.values() if r.slot == 3)
    assert (third.pid, signal.SIGTERM) in rig.sent and third.expected_exit
    rig.dispatch(signal.SIGTERM)
    assert rig.stopping and {(first.pid, signal.SIGTERM), (second.pid, signal.SIGTERM)} <= set(rig.sent)
    rig.dispatch(signal.SIGINT)                  # a second Ctrl-C: quick
    assert (first.pid, signal.SIGQUIT) in rig.sent


def test_a_sigterm_right_after_the_fork_is_not_lost(tmp_path, monkeypatch):
    """The worker signals itself before any of its own set-up ran: the signal waits (blocked
    across the fork) for the worker's handler, and the worker stops at once. Before the fix it
    met the master's do-nothing handler and the worker served on until killed."""
    from fastcluster import worker

    real_run = worker.run

    def early_signal(spec):
        os.kill(os.getpid(), signal.SIGTERM)
        real_run(spec)

    monkeypatch.setattr(worker, "run", early_signal)
    m = Master(Config(bind=parse_bind("127.0.0.1:0"), workers=1, loop="python", graceful_timeout=60.0))
    m.listener = socket.socket()
    m.listener.bind(("127.0.0.1", 0))
    m.listener.listen()
    m.selector = selectors.DefaultSelector()
    m._install_signals()
    try:
        rec = m._spawn(1)
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            pid, status = os.waitpid(rec.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.kill(rec.pid, signal.SIGKILL)
            os.waitpid(rec.pid, 0)
            pytest.fail("the worker did not stop: its SIGTERM was lost")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        m._unwatch(rec)
        m._restore_signals()
        m.selector.close()
        m.listener.close()
