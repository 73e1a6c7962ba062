"""`python train.py ...` in a checkout: the same command as `kt-train` (tasks/train.py holds it).

python train.py experiment=<name> trainer=ddp_cpu seed=1
python train.py --help
"""

from tasks.train import main, train  # noqa: F401  (tests and scripts import them from here)

if __name__ == "__main__":
    from tasks.train import command

    command("train.py")
