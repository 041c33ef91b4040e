"""study/claims.py: one run, one worker; a dead worker's claim is free."""

import subprocess
import sys
import textwrap

from study import claims

HOLD = textwrap.dedent("""
    import sys, time
    from study import claims
    assert claims.claim(sys.argv[1], "final/full/cam/seed0")
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(workdirs):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdirs)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_run_another_process_holds_is_not_claimed_until_it_ends(tmp_path):
  proc = _holder(tmp_path)
  try:
    assert not claims.claim(str(tmp_path), "final/full/cam/seed0")
    assert claims.claim(str(tmp_path), "final/full/cam/seed1")
  finally:
    proc.kill()  # killed, not released: the kernel drops its lock
    proc.wait()
  assert claims.claim(str(tmp_path), "final/full/cam/seed0")
  assert claims.claim(str(tmp_path), "final/full/cam/seed0")  # held already
  claims.release("final/full/cam/seed0")
  claims.release("final/full/cam/seed1")
  assert not claims._held


def test_a_released_claim_is_free_for_another_process(tmp_path):
  assert claims.claim(str(tmp_path), "final/full/cam/seed0")
  claims.release("final/full/cam/seed0")
  proc = _holder(tmp_path)  # asserts it could claim
  proc.kill()
  proc.wait()


def test_exclusive_waits_for_the_holder(tmp_path):
  script = textwrap.dedent("""
      import sys, time
      from study import claims
      with claims.exclusive(sys.argv[1], "dataset"):
        print("in", flush=True)
        time.sleep(1.0)
        open(sys.argv[2], "w").write("done")
  """)
  marker = tmp_path / "marker"
  proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path),
                           str(marker)], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "in"
  with claims.exclusive(str(tmp_path), "dataset"):
    assert marker.read_text() == "done"  # entered only after the holder left
  proc.wait()
