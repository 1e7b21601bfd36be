"""hymate: learning from electronic health records with HyMaTE (hybrid Mamba + Transformer)."""

__version__ = "0.1.0"
