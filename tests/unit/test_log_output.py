"""NonBlockingOutput over real pipes and files."""

import fcntl
import os

from clusterserve.log_output import NonBlockingOutput

F_SETPIPE_SZ = 1031


def _notice(count):
    return f"[dropped {count}]\n"


def _read_all(fd):
    data = b""
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data.decode()


def test_a_full_pipe_never_blocks_and_lost_lines_are_counted_once_it_drains():
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    with os.fdopen(write_end, "w") as stream:
        output = NonBlockingOutput(stream, _notice, max_pending=1000)
        lines = [f"line {n:04d} " + "x" * 90 + "\n" for n in range(100)]  # 10 KB: more than pipe and buffer
        for line in lines:
            output.write(line)
            output.flush()  # returns at once although the pipe is full
        taken = _read_all(read_end)
        assert taken.startswith(lines[0]) and taken.count("\n") < 100
        output.write("after\n")
        output.flush()
        text = taken + _read_all(read_end)
        kept = text.splitlines()
        dropped = 100 - (len(kept) - 2)
        assert kept[:-2] == [line.rstrip("\n") for line in lines[:len(kept) - 2]]  # in order, none cut
        assert dropped > 0 and kept[-2:] == [f"[dropped {dropped}]", "after"]
    os.close(read_end)


def test_what_waits_goes_out_at_the_next_flush():
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    with os.fdopen(write_end, "w") as stream:
        output = NonBlockingOutput(stream, _notice)
        output.write("a" * 6000 + "\n")
        output.flush()
        first = _read_all(read_end)
        assert 0 < len(first) < 6001
        output.flush()
        assert first + _read_all(read_end) == "a" * 6000 + "\n"
    os.close(read_end)


def test_a_file_gets_every_line(tmp_path):
    path = tmp_path / "log"
    with open(path, "a") as stream:
        output = NonBlockingOutput(stream, _notice)
        for n in range(1000):
            output.write(f"{n}\n")
            output.flush()
    assert path.read_text().split() == [str(n) for n in range(1000)]


def test_a_pipe_without_a_reader_drops_lines_without_raising():
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as stream:
        output = NonBlockingOutput(stream, _notice)
        output.write("nobody reads this\n")
        output.flush()
