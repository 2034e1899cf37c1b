"""Domain adaptation: bi-encoder fine-tuning and cross-encoder reranker training."""

from vecdoctor._lazy import lazy_exports

# Names resolve on first use so that importing the package never imports torch.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Pair": "vecdoctor.finetune.pairs",
        "read_pairs": "vecdoctor.finetune.pairs",
        "pairs_from_qrels": "vecdoctor.finetune.pairs",
        "self_supervised_pairs": "vecdoctor.finetune.pairs",
        "NegativeSource": "vecdoctor.finetune.negatives",
        "MiningConfig": "vecdoctor.finetune.negatives",
        "mine_negatives": "vecdoctor.finetune.negatives",
        "FinetuneConfig": "vecdoctor.finetune.biencoder",
        "FinetuneResult": "vecdoctor.finetune.biencoder",
        "finetune": "vecdoctor.finetune.biencoder",
        "RerankLoss": "vecdoctor.finetune.reranker",
        "RerankerConfig": "vecdoctor.finetune.reranker",
        "RerankerResult": "vecdoctor.finetune.reranker",
        "train_reranker": "vecdoctor.finetune.reranker",
        "TermPair": "vecdoctor.finetune.terms",
        "read_term_pairs": "vecdoctor.finetune.terms",
        "term_consistency": "vecdoctor.finetune.terms",
    },
)
