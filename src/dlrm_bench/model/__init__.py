"""The FP32 DLRM (reference semantics), its checkpoints in the reference layout, CPU training, and the rules that
locate a dataset and its model.

    dlrm.py        DLRM = DenseArch + EmbeddingArch + InteractionArch + OverArch; reference_shapes()
    checkpoint.py  load_checkpoint / load_for_dataset / check_state_dict / save_checkpoint
    train.py       `dlrm-bench train` (main(args)) and train(TrainConfig)
    locate.py      locate(dataset, dataset_dir, model) -> Located(dataset, dataset_dir, model_path)
"""
