"""The ``config.source`` fields of the datasets on disk, one copy for the config files and
the data floor.

``configs/quickstart.py`` starts ``config.source`` from :data:`SOURCE_DEFAULTS`;
``configs/{letor,movielens,tabular}.py`` update it with their own values below. The
registry's :class:`~prerank_jax.data.registry.DatasetSpec` carries the resulting values
(:data:`CONFIG_SOURCES`), so the prepare command in a missing-dataset message lists only
the fields a user changed, without the data floor loading a config file. This module imports
nothing from the package.
"""

from __future__ import annotations

from typing import Any, Mapping

# Every field any loader reads (checked by prerank_jax.data.validation.validate_data_config).
SOURCE_DEFAULTS: Mapping[str, Any] = dict(
    data_dir="",            # prepared datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    manual_dir="",          # raw files; "" = <data_dir>/downloads/manual/<dataset>
    preset="",              # simulator_tfds: tiny|small|default|large; "" = config.data
    train_file="", valid_file="", test_file="",  # letor/tabular, relative to manual_dir
    valid_fraction=0.1, test_fraction=0.1,  # requests carved from train without a file
    list_size=100,          # N: longer lists are truncated (rule in each loader's doc)
    min_list_size=10,       # shorter lists are dropped: letor train/valid (its test split
                            # keeps every query), tabular; not needed for eval.k
    num_exposed=10, logging_noise=1.0, logging_feature=0, position_bias=0.0,  # letor logs
    student_features=(), teacher_features=(),  # letor feature ids; () = all
    normalize="log_zscore",  # letor: log_zscore | zscore | none (train statistics)
    num_negatives=50, history_fraction=0.5,   # movielens
    request_column="request_id", label_column="label", exposed_column="",  # tabular
    truth_column="", propensity_column="", split_column="",
    context_columns=(), item_columns=(), cross_columns=(),
    candidate_column="",    # tabular: the candidate IDs; "" = the row number in its file
    # tabular categorical IDs (docs/guides/id_features.md), each hashed (FNV-1a, stable on
    # every host) into id_buckets rows, row 0 for null/padding: request-side columns
    # (constant per request), candidate-side columns, and a list column of the user's
    # behaviour (item IDs of the first item_id_columns field; one per request, its first
    # sequence_length entries kept); "" / () = none.
    context_id_columns=(), item_id_columns=(), sequence_column="", sequence_length=20,
    id_buckets=100_003,
    # The logged teacher (teacher.model.name="logged", prerank_jax/data/logged_teacher.py):
    # tabular: one column of scores per teacher (several: an ensemble);
    teacher_score_columns=(),
    # letor: per split file, one score file per teacher, one score a line aligned with the
    # split's LibSVM file (LightGBM `predict` output), relative to manual_dir; a split
    # carved from train takes its scores from train's files.
    teacher_score_file=dict(train=(), valid=(), test=()))

# configs/letor.py's default student feature set: 20 cheap MSLR-WEB features (1-based MSLR
# ids). They mean nothing in another file, so only MSLR datasets may use them
# (prerank_jax.data.letor.check_student_features).
MSLR_STUDENT_FEATURES = (5, 10, 11, 12, 13, 15, 75, 108, 110, 126, 127, 128, 129, 130,
                         131, 132, 133, 134, 135, 136)

LETOR_SOURCE: Mapping[str, Any] = dict(
    list_size=120,          # MSLR lists: median about 110 documents
    min_list_size=10,       # >= eval.k
    num_exposed=10,
    logging_noise=1.0,
    # 20 cheap MSLR features: covered query terms and stream lengths of the whole document,
    # BM25/TF-IDF of title and whole document, URL and link statistics, PageRank and quality.
    student_features=MSLR_STUDENT_FEATURES,
    teacher_features=(),    # all 136
)

MOVIELENS_SOURCE: Mapping[str, Any] = dict(
    list_size=100,
    num_negatives=50,       # at least 50 never-rated items a list
    history_fraction=0.5,
)

TABULAR_SOURCE: Mapping[str, Any] = dict(
    train_file="logs.parquet",        # relative to source.manual_dir
    split_column="",                  # "" = carve valid/test by request
    request_column="request_id",
    label_column="label",             # null where the candidate was not shown
    context_columns=("user_f0", "user_f1"),
    item_columns=("item_f0", "item_f1", "item_f2"),
    cross_columns=("cross_f0",),      # teacher only
    list_size=100,
    min_list_size=10,
)

# RecFlow (prerank_jax/data/recflow.py): its protocol, days and files. Dates are ISO days,
# ranges "first:last" inclusive; the defaults are RecFlow's coarse-ranking split.
RECFLOW_SOURCE: Mapping[str, Any] = dict(
    recflow_protocol="coarse",        # coarse (RecFlow's benchmark) | lcron (LCRON's)
    recflow_train_days="2024-01-13:2024-02-17",
    recflow_test_day="2024-02-18",
    recflow_test_file="coarse_rank_test.feather",  # RecFlow's code: prerank_test.feather
    recflow_label="effective_view",   # long_view | like | follow | forward | comment
    recflow_per_stage=10,             # lcron: candidates per stage (4 stages: N = 40)
    list_size=470,                    # coarse: test lists padded to 470 (RecFlow's scripts)
    # The valid split is read whole (the train split stays on disk): 2% of 36 (coarse) or
    # 22 (lcron) train days is under one day's requests.
    valid_fraction=0.02,
)

# dataset kind (prerank_jax.data.registry.DatasetSpec.kind) -> the configs/ file that sets
# it up, named in a missing dataset's prepare command.
CONFIG_FILES: Mapping[str, str] = {
    "simulator": "configs/quickstart.py",
    "simulator_tfds": "configs/quickstart.py",
    "letor": "configs/letor.py",
    "movielens": "configs/movielens.py",
    "tabular": "configs/tabular.py",
    "recflow": "configs/recflow.py",
}

# config file -> its config.source (without flags such as :smoke).
CONFIG_SOURCES: Mapping[str, Mapping[str, Any]] = {
    "configs/quickstart.py": SOURCE_DEFAULTS,
    "configs/letor.py": {**SOURCE_DEFAULTS, **LETOR_SOURCE},
    "configs/movielens.py": {**SOURCE_DEFAULTS, **MOVIELENS_SOURCE},
    "configs/tabular.py": {**SOURCE_DEFAULTS, **TABULAR_SOURCE},
    "configs/recflow.py": {**SOURCE_DEFAULTS, **RECFLOW_SOURCE},
}
