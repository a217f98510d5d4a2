"""The child side of the pool: runs in a forked process, asks for work by being idle,
runs a plain task on its main thread (or, in the threads pool, on threads) and
``async def`` tasks on an event loop (mesh/node/child_runners.py), reports each
result, and retires when told to by its limits. It talks to its node over a
socketpair (mesh.channel) and never touches the zmq Context it inherited from the
node.

It sends the signals Celery sends in a pool process (docs/signals.md):
``worker_process_init`` once before its first task, the task signals around each
task (through mesh/trace.py), ``task_revoked`` when terminated with a signal it can
catch, ``task_unknown``/``task_rejected`` for what it cannot run, and
``worker_process_shutdown`` when it exits through Python."""
from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import msgpack

from mesh import signals, states
from mesh.exceptions import NotRegistered, SoftTimeLimitExceeded
from mesh.node.channel import AHEAD_TAG, SKIP_TAG, BlockingChannel
from mesh.node.child_runners import Runners
from mesh.security.text import MULTILINE, clipped, clipped_lines, printable, safe_logger
from mesh.task import Request
from mesh.trace import Outcome, execute
from mesh.wire import codec
from mesh.wire.protocol import (
    PROTOCOL_VERSION,
    ChildCancel,
    ChildDone,
    ChildReady,
    ChildState,
    MsgType,
    Result,
    Submit,
    decode,
    encode,
    prepare,
)

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config

# what a child decodes and builds, generated here, in the node before it forks them:
# a child then compiles nothing (docs/performance.md, "Round 11")
prepare(Submit, ChildCancel, ChildReady, ChildDone, ChildState, Result)

log = safe_logger("mesh.child")
task_log = safe_logger("mesh.task")     # a task's end, as Celery's worker logs it

MAX_SKIPS = 1000    # skips remembered for tasks sent ahead (more: a skip that came late)

# A finished task's Result frame is packed from its fields in the wire's order, without
# the Result object encode() would read them from (a task's hot path, docs/performance.md
# "Round 7b"); a change to Result's fields must change this, not go unnoticed:
_RESULT_FIELDS = ("task_id", "state", "result", "exc", "traceback", "runtime", "node",
                  "retries", "eta", "date_done", "payload")
if tuple(spec[0] for spec in Result._spec) != _RESULT_FIELDS:
    raise RuntimeError("mesh.wire.protocol.Result changed: update child._result_frame")
_RESULT_HEAD = (PROTOCOL_VERSION, MsgType.RESULT.value)
_packb = msgpack.packb


def _result_frame(task_id: str, state: str, result: bytes | None, exc: dict[str, Any] | None,
                  tb: str | None, runtime: float, node: str, retries: int,
                  date_done: float | None, payload: bytes | None) -> bytes:
    """``encode(Result(...))`` of a task the child ran (no eta: the node sets it)."""
    frame: bytes = _packb((*_RESULT_HEAD, task_id, state, result, exc, tb, runtime, node,
                           retries, None, date_done, payload), use_bin_type=True)
    return frame


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def exc_info_of(e: BaseException) -> dict[str, Any]:
    """The wire description of an exception (see protocol.Result)."""
    cls = type(e)
    try:
        args: bytes | None = codec.dumps(list(e.args))
    except Exception:
        args = None
    return {"type": cls.__qualname__, "module": cls.__module__, "message": str(e), "args": args}


def _log_end(msg: Submit, state: str, exc: dict[str, Any] | None, tb: str | None,
             countdown: float | None, expected: bool = False) -> None:
    """A task that failed or retries leaves a line in the node's log, as in Celery's
    worker: ERROR with the traceback for a failure, INFO without it for an error the
    task declares in ``throws``, INFO for a retry (a success is DEBUG, above). Without
    it a failure was seen only by whoever asked for the result."""
    # the exception's text is the task's, of any size: cut for the log (the result
    # keeps it whole)
    what = f"{clipped(str(exc.get('type')))}: {clipped(str(exc.get('message')))}" \
        if exc else ""
    if state == states.FAILURE and expected:
        task_log.info("Task %s[%s] raised expected: %s", msg.name, msg.task_id, what)
    elif state == states.FAILURE:
        # the traceback's lines are meant (MULTILINE: not made one line), the first
        # line's text is escaped here
        task_log.error("Task %s[%s] raised unexpected: %s%s", msg.name, msg.task_id,
                       printable(what, 2000), f"\n{clipped_lines(tb.rstrip())}" if tb else "",
                       extra=MULTILINE)
    elif state == states.RETRY:
        task_log.info("Task %s[%s] retry: Retry in %gs: %s", msg.name, msg.task_id,
                      countdown or 0, what)
    elif state == states.REPLACED:
        task_log.info("Task %s[%s] replaced by a new task", msg.name, msg.task_id)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL us when the node dies, so a node killed with -9 leaves no
    orphaned children running tasks nobody will collect."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)    # PR_SET_PDEATHSIG
    except Exception as e:   # not Linux: children exit when their channel closes
        log.debug("PR_SET_PDEATHSIG unavailable: %s", e)


def _close_inherited_sockets(keep: int, data_dir: str = "") -> None:
    """Close the node's sockets that fork copied into us (its listening front door
    above all: an orphan holding it would keep a restarted node from binding), and
    its files in the data dir (the journal, and the lock: a child outliving a killed
    node by a few milliseconds would otherwise keep a restarted node out). Other
    files and pipes stay open: the app's log handlers may use them."""
    import stat
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    prefix = os.path.realpath(data_dir) + os.sep if data_dir else None
    for fd in fds:
        if fd <= 2 or fd == keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
            elif prefix and os.readlink(f"/proc/self/fd/{fd}").startswith(prefix):
                os.close(fd)
        except OSError:
            pass


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class StopFlags:
    """One byte per child slot, in memory shared across fork: the node sets a child's
    byte just before it sends that child SIGTERM or SIGINT itself. A child ignores
    those signals unless its byte is set. So a signal sent to the whole process group
    (systemd's default KillMode=control-group, ``timeout``, Ctrl-C in a terminal)
    stops only the node, which then drains its children exactly as it does when it
    alone gets SIGTERM: running tasks finish, no child dies mid-task.

    After those bytes, 4 per child slot count the SKIP frames the node has sent that
    child (``skip_sent``): before it starts a task sent ahead, a child reads its
    channel for SKIPs that came since (a system call, which mostly finds nothing)
    only when that count is ahead of the SKIPs it has read (``skip_pending``)."""

    SIZE = 1 << 16            # child slots (a pool's indexes are below its size)

    def __init__(self) -> None:
        # anonymous and shared: children see writes
        self._mem = mmap.mmap(-1, self.SIZE + 4 * self.SIZE)

    def arm(self, index: int) -> None:
        self._mem[index] = 1

    def clear(self, index: int) -> None:
        """A new child in slot ``index``: not stopped, no SKIP sent."""
        self._mem[index] = 0
        at = self.SIZE + 4 * index
        self._mem[at:at + 4] = bytes(4)

    def skip_sent(self, index: int) -> None:
        """(Node) one more SKIP frame queued for the child in slot ``index``; counted
        once the frame is queued, so a child that sees the count reads its channel."""
        at = self.SIZE + 4 * index
        n = (int.from_bytes(self._mem[at:at + 4], "little") + 1) & 0xFFFFFFFF
        self._mem[at:at + 4] = n.to_bytes(4, "little")

    def skip_pending(self, index: int, read: int) -> bool:
        """(Child) has the node sent more SKIPs than the ``read`` (mod 2**32) so far?
        A count read while it is being written is either value: the old one only
        delays the read to the next task sent ahead, as a SKIP still in flight does."""
        at = self.SIZE + 4 * index
        return int.from_bytes(self._mem[at:at + 4], "little") != read & 0xFFFFFFFF

    def armed(self, index: int) -> bool:
        return self._mem[index] == 1


def _signal_soft_limit(soft: float | None) -> float | None:
    """The soft time limit SIGALRM gives a task on the main thread; None on the threads
    pool's threads, whose watchdog gives them theirs (mesh/node/child_runners.py)."""
    if soft is None:
        return None
    return soft if threading.current_thread() is threading.main_thread() else None


class _Stop(BaseException):
    """SIGTERM while idle: leave the loop and exit cleanly (worker_process_shutdown)."""


class Child:
    def __init__(self, app: "Mesh", config: "Config", node_name: str,
                 stop_flags: StopFlags | None = None, index: int = 0):
        self.app = app
        self.config = config
        self.node_name = node_name
        self.stop_flags = stop_flags      # None: SIGTERM stops the child whoever sent it
        self.index = index
        self.done = 0
        self._proc: Any = None
        self._countdown: float | None = None
        self._keep = True                       # the node keeps the result (not ignored)
        self._next_call: bytes | None = None     # retry(args=, kwargs=): the next run's payload
        self._chan: BlockingChannel | None = None
        self._chan_lock = threading.Lock()
        self._done_lock = threading.Lock()
        self._busy = False                 # between taking a task and sending its result
        self._running: tuple[Any, Request] | None = None   # (task, request) while it runs
        self.home = ""            # the node's front door ("": not known, e.g. in a test)
        self.expected = False     # this run failed with an error of the task's ``throws``
        self.unrun = False        # this run failed before the task ran (prepare: not
        #                           registered, arguments that do not decode)

    def twin(self) -> "Child":
        """A Child for another thread of this process: its own per-run state, the same
        channel (update_state from a thread reaches the node too)."""
        other = type(self)(self.app, self.config, self.node_name)
        other._chan = self._chan
        return other

    def main(self, sock: socket.socket, node_pid: int,
             mask: Iterable[int] = ()) -> NoReturn:
        """Run in the forked child; never returns. The node forks with SIGTERM and
        SIGINT blocked; ``mask`` is the signal mask to restore once this process has
        its own handlers (what arrived meanwhile is handled by them then)."""
        code = 0
        try:
            self._setup_process(node_pid)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _close_inherited_sockets(keep=sock.fileno(), data_dir=self.config.data_path)
            if self.home:           # tasks that send tasks go through this node
                self.app._in_node([self.home, *self.config.peers], self.config.keys)
            signals.worker_process_init.send(sender=None)   # before ChildReady: no task yet
            chan = self._chan = BlockingChannel(sock)
            chan.send(encode(ChildReady(pid=os.getpid())))
            self._loop(chan)
        except (KeyboardInterrupt, _Stop):
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 70
        finally:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)   # let the receivers finish
                signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=code)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def _setup_process(self, node_pid: int) -> None:
        _die_with_parent()
        if os.getppid() != node_pid:      # the node died before we could ask
            os._exit(0)
        signal.set_wakeup_fd(-1)
        # the node decides when we stop: SIGINT/SIGTERM count only when it sent them
        # (a signal to the whole process group is meant for the node, which drains us)
        signal.signal(signal.SIGINT, self._on_sigint if self.stop_flags is not None
                      else signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, _raise_soft_limit)

    def _from_node(self) -> bool:
        """Did our node send the signal being handled (or do we not know)?"""
        return self.stop_flags is None or self.stop_flags.armed(self.index)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """SIGINT from our node (revoke with signal=SIGINT): die of it; else ignore it."""
        if self._from_node():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Not from our node: ignore it (it went to the whole process group). From it:
        idle, exit cleanly (the node retires idle children with SIGTERM); busy, the
        task is being terminated (``revoke(terminate=True, signal="SIGTERM")``): send
        task_revoked, then die of the signal as before, so the node reports it."""
        if not self._from_node():
            return
        if not self._busy:
            raise _Stop()
        running = self._running
        if running is not None:
            task, req = running
            signals.task_revoked.send(sender=task, request=req, terminated=True,
                                      signum=signum, expired=False)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)            # not reached: the signal's default action kills us

    def _loop(self, chan: BlockingChannel) -> None:
        runners = Runners.for_child(self, chan)   # threads, async def tasks, cancels
        ahead: str | None = None           # the next frame is this task, sent ahead
        skips: set[str] = set()            # tasks sent ahead not to start (revoked)
        flags, index = self.stop_flags, self.index
        skips_read = 0                     # SKIP frames read so far (see StopFlags)
        while True:
            try:
                frame = chan.recv()
            except SoftTimeLimitExceeded:      # a late alarm between tasks: ignore it
                continue
            if frame is None:                  # the node closed our channel: stop
                return
            tag = frame[:1]
            if tag == AHEAD_TAG:
                ahead = frame[1:].decode()
                continue
            if tag == SKIP_TAG:
                skips_read += 1
                if len(skips) > MAX_SKIPS:     # skips that came after their task ran
                    skips.clear()
                skips.add(frame[1:].decode())
                continue
            if ahead is not None:              # a skip may have come since it was sent
                tid, ahead = ahead, None
                if flags is None or flags.skip_pending(index, skips_read):
                    found = chan.skips()
                    skips_read += len(found)
                    skips.update(found)
                if tid in skips:
                    skips.discard(tid)
                    res = Result(task_id=tid, state=states.REVOKED, node=self.node_name)
                    chan.send(encode(ChildDone(tid, states.REVOKED, 0.0)), encode(res))
                    continue
            msg = None
            if runners is not None:
                if runners.take(frame):
                    continue
                msg = runners.decoded          # (decoded there already)
            self._busy = True
            done, result = self.run_frame(frame, msg)
            retire = self.finished(chan, done, result)
            self._busy = False
            if retire and not (runners is not None and runners.busy):
                return

    def finished(self, chan: BlockingChannel, done: ChildDone, result: bytes) -> bool:
        """Send a finished task's header and Result to the node (from any thread);
        True when this child has reached a limit and retires (the node then sends it
        no more work, and stops it once its tasks are done)."""
        max_tasks = self.config.max_tasks_per_child
        max_mem = self.config.max_memory_per_child
        with self._done_lock:
            self.done += 1
            retire = None
            if max_tasks and self.done >= max_tasks:
                retire = f"max tasks per child ({max_tasks})"
            elif max_mem:
                rss_kib = self._rss() // 1024
                if rss_kib > max_mem:
                    retire = f"max memory per child ({rss_kib} KiB > {max_mem} KiB)"
            if retire:
                done = ChildDone(done.task_id, done.state, done.runtime, retire, self._rss(),
                                 done.countdown, done.keep)
            chan.send(encode(done), result)
        return retire is not None

    def _rss(self) -> int:
        if self._proc is None:
            from mesh.node.procstat import Proc
            self._proc = Proc()
        return int(self._proc.rss())

    def run_frame(self, frame: bytes, msg: Submit | None = None) -> tuple[ChildDone, bytes]:
        """Run one Submit frame (``msg``: the frame decoded, if it was already); return
        the header for the node and the Result frame."""
        t0 = time.perf_counter()
        try:
            if msg is None:
                decoded = decode(frame)
                if type(decoded) is not Submit:
                    raise TypeError(f"child expected a Submit, got {type(decoded).__name__}")
                msg = decoded
        except Exception as e:   # the node validated it; this is a bug, report it anyway
            log.error("child got a bad task frame: %s", e)
            signals.task_rejected.send(sender=None, message=frame, exc=e)
            res = Result(task_id="?", state=states.FAILURE, exc=exc_info_of(e), node=self.node_name)
            return ChildDone("?", states.FAILURE, 0.0), encode(res)
        self._countdown = None
        self._keep = True
        self._next_call = None
        state, value, exc, tb = self.run_task(msg)
        return self.frames(msg, state, value, exc, tb, time.perf_counter() - t0)

    def frames(self, msg: Submit, state: str, value: bytes | None, exc: dict[str, Any] | None,
               tb: str | None, runtime: float) -> tuple[ChildDone, bytes]:
        """The header for the node and the Result frame of a run that just ended."""
        if state != states.SUCCESS:
            # a failure before the task ran: its traceback is mesh's, not the task's (and
            # the frame may be a hostile peer's): the line without it
            _log_end(msg, state, exc, None if self.unrun else tb, self._countdown, self.expected)
            self.unrun = self.expected = False
        elif task_log.isEnabledFor(logging.DEBUG):
            task_log.debug("Task %s[%s] succeeded in %.6fs", msg.name, msg.task_id, runtime)
        done_at = None if state == states.RETRY else time.time()
        try:
            res = _result_frame(msg.task_id, state, value, exc, tb, runtime, self.node_name,
                                msg.retries, done_at, self._next_call)
        except UnicodeEncodeError:      # a lone surrogate in the exception's text (a file
            if exc is not None:         # name os.fsdecode made): escaped, not the child's end
                exc = {k: _utf8(v) if isinstance(v, str) else v for k, v in exc.items()}
            res = _result_frame(msg.task_id, state, value, exc, _utf8(tb) if tb else tb,
                                runtime, self.node_name, msg.retries, done_at, self._next_call)
        return (ChildDone(msg.task_id, state, runtime, None, 0, self._countdown, self._keep),
                res)

    def _state_sink(self, task_id: str) -> Any:
        """update_state and track_started: a CHILD_STATE to the node, at once."""
        def send(state: str, meta: bytes | None) -> None:
            if self._chan is not None:
                with self._chan_lock:          # a task's own threads may report too
                    self._chan.send(encode(ChildState(task_id, state, meta)))
        return send

    def run_task(self, msg: Submit) -> tuple[str, bytes | None, dict[str, Any] | None, str | None]:
        """Run the task through the tracer (mesh/trace.py: handlers, retries, Reject,
        Ignore); the Result's state, value, exception and traceback."""
        try:
            task, req, soft = self.prepare(msg)
        except Exception as e:
            self.unrun = True
            return states.FAILURE, None, exc_info_of(e), "".join(traceback.format_exception(e))
        self._running = (task, req)        # for task_revoked, if we are terminated
        try:
            o = execute(task, req, _signal_soft_limit(soft))
        finally:
            self._running = None
        return self.outcome(o)

    def prepare(self, msg: Submit) -> tuple[Any, Request, float | None]:
        """The task, its request and its soft time limit; NotRegistered (and the
        task_unknown signal), or the codec's error for arguments that do not decode (and
        task_rejected)."""
        task = self.app.tasks.get(msg.name)
        if task is None:
            e = NotRegistered(f"task {msg.name!r} is not registered on node {self.node_name}")
            signals.task_unknown.send(sender=None, name=msg.name, id=msg.task_id, message=msg, exc=e)
            raise e
        try:
            args, kwargs = codec.load_call(msg.payload)
            if msg.headers.get("errback") is True:      # a link_error callback
                from mesh.workflow.errback import errback_args
                args = errback_args(task, args)
        except Exception as e:
            signals.task_rejected.send(sender=None, message=msg, exc=e)
            raise
        options = task.options
        soft = msg.soft_time_limit
        if soft is None:
            soft = options.soft_time_limit
        if soft is None:
            soft = self.config.soft_time_limit
        req = Request(
            id=msg.task_id, task=msg.name, args=args, kwargs=kwargs, retries=msg.retries,
            eta=msg.eta, expires=msg.expires, hostname=self.node_name, priority=msg.priority,
            time_limit=msg.time_limit, soft_time_limit=soft, headers=msg.headers,
            called_directly=False)
        req.state_sink = self._state_sink(msg.task_id)
        if options.track_started:
            req.state_sink(states.STARTED, codec.dumps({"pid": os.getpid(), "hostname": self.node_name}))
        return task, req, soft

    def outcome(self, o: Outcome) -> tuple[str, bytes | None, dict[str, Any] | None, str | None]:
        """What a run came to, as the Result's state, value, exception and traceback
        (and this run's countdown, keep and next arguments, for ``frames``)."""
        self._countdown, self._keep, self._next_call = o.countdown, o.keep, None
        self.expected = o.expected
        if o.call is not None:
            try:
                self._next_call = codec.dump_call(*o.call)
            except Exception as e:          # retry(args=...) with what cannot be sent
                return states.FAILURE, None, exc_info_of(e), "".join(traceback.format_exception(e))
        if o.state == states.SUCCESS or o.state == states.IGNORED or o.state == states.REPLACED:
            return o.state, o.encoded, None, None   # REPLACED: the replacement's map
        assert o.exc is not None
        return o.state, None, exc_info_of(o.exc), o.traceback
