"""The FP32 DLRM (reference semantics), its checkpoints in the reference layout, and CPU training. (Which dataset
and model a command means: workflow.locate.)

    dlrm.py        DLRM = DenseArch + EmbeddingArch + InteractionArch + OverArch; reference_shapes()
    checkpoint.py  load_checkpoint / load_for_dataset / check_state_dict / save_checkpoint
    train.py       `dlrm-bench train` (main(args)) and train(TrainConfig)
"""
