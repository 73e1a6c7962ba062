"""`python eval.py ...` in a checkout: the same command as `kt-eval` (tasks/eval.py holds it).

python eval.py ckpt=<run dir>/export
python eval.py --help
"""

from tasks.eval import evaluate, main  # noqa: F401  (tests and scripts import them from here)

if __name__ == "__main__":
    from tasks.eval import command

    command("eval.py")
