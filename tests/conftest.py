import os

import torch

# Tests never touch the network: huggingface_hub / transformers / diffusers read this at import.
os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)  # the test machine's cores are shared
