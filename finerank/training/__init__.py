"""Fine-tuning: the run skeleton, the Trainer's callbacks, the cross-encoder and bi-encoder trainers."""
