"""DeRy (Deep Model Reassembly, NeurIPS 2022): dissect a zoo of pre-trained timm models
into atomic nodes, measure node similarity with linear CKA, partition every member into K
blocks grouped in equivalence sets, search one block per stage under parameter and FLOPs
budgets with a training-free proxy, stitch the blocks and train the result.

Stages (each a Hydra app that writes summary.json, chained by conf/chain/dery_*.yaml):
    python -m dery.similarity   # zoo -> pooled node features -> CKA (cached on disk)
    python -m dery.partition    # CKA -> K blocks per member in K equivalence sets
    python -m dery.search       # sets -> best network under budgets -> spec.yaml
    python train.py experiment=dery_digits model.spec=<spec.yaml>   # stitch and train
"""
