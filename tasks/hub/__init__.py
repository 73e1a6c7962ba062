"""Publishing exports: kt-push to the Hugging Face Hub."""
