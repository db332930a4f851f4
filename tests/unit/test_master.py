"""The master in-process: os.fork patched (the parent side runs for real, with pipes and the board),
signals dispatched directly, exits handed to on_exit(). One test forks for real, to show that a
signal sent in the window right after a fork is not lost."""

import os
import selectors
import signal
import socket
import time

import pytest

from fastcluster import signals, slots
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
    monkeypatch.setattr(signals, "kill", lambda pid, sig: sent.append((pid, sig)))
    m = Master(Config(bind=(parse_bind("127.0.0.1:0"),), workers=2, loop="python", graceful_timeout=5.0))
    m.listeners = [socket.create_server(("127.0.0.1", 0))]
    m.urls = ["http://test"]
    m.selector = selectors.DefaultSelector()
    m.signals.wake_r, m.signals.wake_w = socket.socketpair()   # (the handlers are not installed)
    m.forks, m.sent = forks, sent
    yield m
    for rec in list(m.workers.values()):
        m._unwatch(rec)
    m.selector.close()
    m.listeners[0].close()
    m.signals.wake_r.close()
    m.signals.wake_w.close()


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
    second.born_at -= slots.STABLE_AFTER
    rig.on_exit(second.pid, -9)                  # a worker that ran fine dies, and no new one can be forked
    rig._maintain()
    assert rig.slots.respawn_at[2] > time.monotonic()
    assert "cannot start worker 2: Resource temporarily unavailable; trying again in 0.1 s" in caplog.text
    assert open_fds() == fds - 1                 # the dead worker's pipe is closed; no new one leaked
    assert sorted(rig.board.free) == sorted(free + [second.board_index])   # its slot and the failed one's
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask           # the fork's block lifted
    rig.slots.respawn_at[2] = 0.0
    rig._maintain()                              # fails again: twice the wait
    assert 0.15 < rig.slots.respawn_at[2] - time.monotonic() <= 0.2
    assert list(rig.workers) == [first.pid]      # and the master serves on with the worker it has
    rig.forks.fail = None
    rig.slots.respawn_at[2] = 0.0
    rig._maintain()
    assert len(rig.workers) == 2


def test_a_rollout_whose_replacement_cannot_be_forked_is_aborted(rig, caplog):
    first, second = start(rig)
    rig.forks.fail = OSError(12, "Cannot allocate memory")
    rig.signals.dispatch(signal.SIGUSR2)
    assert "rolling restart aborted" in caplog.text
    assert not rig.rollout.active and not first.recycling and not second.recycling
    assert rig.sent == [] and set(rig.workers) == {first.pid, second.pid}
    assert 1 not in rig.slots.respawn_at and 2 not in rig.slots.respawn_at   # nothing to respawn: both still serve


def test_a_rolling_restart_replaces_one_worker_at_a_time(rig):
    first, second = start(rig)
    rig.signals.dispatch(signal.SIGUSR2)
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
    rig.signals.dispatch(signal.SIGUSR2)
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
        delays.append(round(rig.slots.respawn_at.get(2, time.monotonic()) - time.monotonic(), 1))
        rig.slots.respawn_at[2] = 0.0
        rig._maintain()
    assert delays == [0.0, 0.1, 0.2, 0.4]
    rec = next(r for r in rig.workers.values() if r.slot == 2)
    ready(rig, rec)                             # stable: it was ready, and lived past STABLE_AFTER
    rec.born_at -= slots.STABLE_AFTER
    rig.on_exit(rec.pid, 1)
    assert 2 not in rig.slots.failures and 2 not in rig.slots.respawn_at


def test_an_app_that_fails_to_load_stops_the_master_with_its_code(rig):
    rig._maintain()
    (rec,) = rig.workers.values()
    rig.on_exit(rec.pid, EXIT_APP_LOAD_ERROR)
    assert rig.stopping and rig.exit_code == EXIT_APP_LOAD_ERROR


def test_signals_dispatch_through_the_table(rig):
    first, second = start(rig)
    rig.signals.dispatch(signal.SIGTTIN)
    assert rig.target == 3
    rig._maintain()
    assert len(rig.workers) == 3
    rig.signals.dispatch(signal.SIGTTOU)
    rig._maintain()
    third = next(r for r in rig.workers.values() if r.slot == 3)
    assert (third.pid, signal.SIGTERM) in rig.sent and third.expected_exit
    rig.signals.dispatch(signal.SIGTERM)
    assert rig.stopping and {(first.pid, signal.SIGTERM), (second.pid, signal.SIGTERM)} <= set(rig.sent)
    rig.signals.dispatch(signal.SIGINT)                  # a second Ctrl-C: quick
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
    m = Master(Config(bind=(parse_bind("127.0.0.1:0"),), workers=1, loop="python", graceful_timeout=60.0))
    m.listeners = [socket.create_server(("127.0.0.1", 0))]
    m.selector = selectors.DefaultSelector()
    m.signals.install(m.selector)
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
        m.signals.restore()
        m.selector.close()
        m.listeners[0].close()


def overdue(m, rec):
    """`rec` has been starting for longer than --ready-timeout."""
    rec.born_at -= m.config.ready_timeout


def kill_now(m, rec):
    """The stack dump's half second is over: _check_deadlines sends the SIGKILL."""
    rec.kill_at = time.monotonic() - 0.001
    m._check_deadlines()
    assert m.sent[-1] == (rec.pid, signal.SIGKILL)
    m._check_deadlines()                                   # (not reaped yet: no second dump, no second kill)
    assert m.sent[-1] == (rec.pid, signal.SIGKILL) and m.sent[-2][1] != signal.SIGKILL


def test_a_first_start_that_hangs_is_dumped_killed_and_tried_again_with_backoff(rig, caplog):
    """An app import that waits for a database that is down: the master does not wait forever,
    nor stop (the first worker's import errors stop it; a hang is retried)."""
    rig._maintain()
    (rec,) = rig.workers.values()
    rig._check_deadlines()
    assert rig.sent == []                                  # within --ready-timeout: left alone
    overdue(rig, rec)
    rig._check_deadlines()
    assert rig.sent == [(rec.pid, signal.SIGUSR2)]         # faulthandler's stack first
    assert ("worker 1 (pid %d) was not ready after 60 s (--ready-timeout); its stack follows, then it is killed"
            % rec.pid) in caplog.text
    rig._check_deadlines()
    assert rig.sent == [(rec.pid, signal.SIGUSR2)]         # asked once, not once per round
    kill_now(rig, rec)
    rig.on_exit(rec.pid, -signal.SIGKILL)
    assert not rig.stopping and rig.exit_code == 0
    assert "worker 1 (pid %d) was killed by SIGKILL before it was ready; starting a new one" % rec.pid in caplog.text
    rig._maintain()
    (again,) = rig.workers.values()
    assert again.pid != rec.pid and again.slot == 1
    overdue(rig, again)
    rig._check_deadlines()
    kill_now(rig, again)
    rig.on_exit(again.pid, -signal.SIGKILL)
    assert 0.05 < rig.slots.respawn_at[1] - time.monotonic() <= 0.1     # the second in a row: backoff
    assert rig.collect().restarts["timeout"] == 2
    rig.slots.respawn_at[1] = 0.0
    rig._maintain()
    (third,) = rig.workers.values()
    rig.signals.dispatch(signal.SIGTERM)             # a stop while it hangs: it has no request to finish
    assert rig.sent[-1] == (third.pid, signal.SIGQUIT)


def test_a_respawn_or_ttin_start_that_hangs_is_killed_and_the_others_serve_on(rig, caplog):
    first, second = start(rig)
    rig.signals.dispatch(signal.SIGTTIN)
    rig._maintain()
    third = next(r for r in rig.workers.values() if r.slot == 3)
    overdue(rig, third)
    rig._check_deadlines()
    assert rig.sent == [(third.pid, signal.SIGUSR2)]
    kill_now(rig, third)
    rig.on_exit(third.pid, -signal.SIGKILL)
    rig._maintain()
    assert {r.slot for r in rig.workers.values()} == {1, 2, 3} and third.pid not in rig.workers
    assert first.pid in rig.workers and second.pid in rig.workers and not rig.stopping


def test_a_rollout_replacement_that_hangs_is_dumped_and_the_rollout_aborted(rig, caplog):
    first, second = start(rig)
    rig.signals.dispatch(signal.SIGUSR2)
    rep = rig.rollout.replacing
    overdue(rig, rep)
    rig._check_deadlines()
    assert rig.sent == [(rep.pid, signal.SIGUSR2)]          # its stack; the old worker is not touched
    assert "rolling restart aborted: worker 1 (pid %d) was not ready after 60 s" % rep.pid in caplog.text
    assert not rig.rollout.active and not first.recycling
    kill_now(rig, rep)
    rig.on_exit(rep.pid, -signal.SIGKILL)
    assert "the worker it was to replace serves on" in caplog.text
    rig._maintain()
    assert set(rig.workers) == {first.pid, second.pid} and rig.slots.respawn_at == {}


def test_a_recycle_whose_replacement_failed_is_asked_for_again_with_backoff(rig, caplog):
    first, second = start(rig)
    rig.on_status(first, b"X max-requests\n")
    rep = rig.rollout.replacing
    assert rep.replaces == first.pid
    overdue(rig, rep)
    rig._check_deadlines()                                   # not ready in time: aborted
    assert not rig.rollout.active
    kill_now(rig, rep)
    rig.on_exit(rep.pid, -signal.SIGKILL)
    rig._check_deadlines()                                   # then asked for again, later
    assert "worker 1 (pid %d) is still past its max-requests limit; asking for its replacement again in 1.0 s" \
        % first.pid in caplog.text
    assert 0.9 < rig._next_deadline() - time.monotonic() <= 1.0
    first.recycle_at = time.monotonic() - 0.001
    rig._check_deadlines()
    again = rig.rollout.replacing
    assert again is not None and again.replaces == first.pid and again.pid != rep.pid
    rig.on_exit(again.pid, 1)                                # dies: aborted again, and the wait doubles
    rig._check_deadlines()
    assert "again in 2.0 s" in caplog.text
    first.recycle_at = time.monotonic() - 0.001
    rig._check_deadlines()
    third = rig.rollout.replacing
    ready(rig, third)                                        # this one makes it: the old one drains
    assert (first.pid, signal.SIGTERM) in rig.sent and first.expected_exit
    rig.on_exit(first.pid, 0)
    assert rig.collect().restarts["recycle"] == 1


def test_max_worker_lifetime_retries_with_backoff_not_on_every_round(rig, caplog):
    rig.config = rig.config.replace(max_worker_lifetime=1.0)
    first, second = start(rig)
    first.lifetime = 1.0
    first.born_at -= 2.0
    rig._check_deadlines()
    rep = rig.rollout.replacing
    assert rep.replaces == first.pid
    rig.forks.fail = OSError(11, "Resource temporarily unavailable")
    rig.on_exit(rep.pid, 1)
    forked = rig.forks.next_pid
    for _ in range(5):
        rig._check_deadlines()
    assert rig.forks.next_pid == forked and caplog.text.count("asking for its replacement again") == 1


def test_the_metrics_endpoint_caps_its_connections_and_drops_idle_ones():
    from fastcluster import metrics

    listener = socket.create_server(("127.0.0.1", 0))
    selector = selectors.DefaultSelector()
    endpoint = metrics.Endpoint(listener, selector, lambda: None)
    clients = []
    try:
        fds = open_fds()
        for _ in range(metrics.MAX_CLIENTS + 20):
            clients.append(socket.create_connection(listener.getsockname(), timeout=5))
        deadline = time.monotonic() + 10
        while len(clients) - sum(at_eof(c) for c in clients) > metrics.MAX_CLIENTS or not endpoint.clients:
            assert time.monotonic() < deadline, "the endpoint did not accept and shed"
            for key, events in selector.select(0.1):
                key.data(events)
        assert len(endpoint.clients) == metrics.MAX_CLIENTS
        assert open_fds() - fds <= metrics.MAX_CLIENTS + len(clients)      # (the test's own + the cap)
        assert all(at_eof(c) for c in clients[:20])               # the oldest were closed to make room
        assert metrics.CLIENT_TIMEOUT <= 2.0
        assert endpoint.deadline() <= time.monotonic() + metrics.CLIENT_TIMEOUT
        endpoint.expire(time.monotonic() + metrics.CLIENT_TIMEOUT)
        assert endpoint.clients == {} and all(at_eof(c) for c in clients)
    finally:
        for c in clients:
            c.close()
        endpoint.close()
        selector.close()


def at_eof(sock):
    """True once the peer closed `sock` (without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_the_pid_file_and_its_status_are_written_refreshed_and_removed_only_while_ours(tmp_path):
    from fastcluster.status import PidFile, Snapshot

    path = str(tmp_path / "fc.pid")
    pidfile = PidFile(path)
    pidfile.claim()
    assert read(path) == "%d\n" % os.getpid()
    written = []

    def collect():
        written.append(1)
        return Snapshot(master_pid=os.getpid(), started=0.0, generation=len(written), workers_wanted=1, loop="python")

    pidfile.refresh(collect, 100.0)
    pidfile.refresh(collect, 100.5)                 # within the second: not again
    assert len(written) == 1 and Snapshot.from_json(read(path + ".json")).generation == 1
    pidfile.changed()                               # a change: at once
    pidfile.refresh(collect, 100.6)
    assert Snapshot.from_json(read(path + ".json")).generation == 2
    with open(path, "w") as f:                      # a new master (an upgrade in place) took it over
        f.write("1\n")
    pidfile.remove()
    assert os.path.exists(path) and os.path.exists(path + ".json")
    pidfile.claim()
    pidfile.remove()
    assert not os.path.exists(path) and not os.path.exists(path + ".json")
    PidFile(None).remove()                          # no --pid: nothing to do


def read(path):
    with open(path) as f:
        return f.read()
