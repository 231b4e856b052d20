"""What the hardening tests check, counted: every fault and bad input below names the tests
that cover it. This test keeps the list honest both ways -- each named test exists, each test
of the hardening files is listed -- and keeps the README's list of covered faults in step."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
HARDENING_FILES = ("test_faults.py", "test_bad_inputs.py", "test_distributed.py")

# (kind, what can go wrong, tests "file::function" that show it is handled)
COVERED = [
    ("fault", "malicious pickle as checkpoint", ["test_faults.py::test_malicious_pickle_checkpoint_is_refused_and_never_runs"]),
    ("fault", "pickle disguised as safetensors", ["test_faults.py::test_pickle_disguised_as_safetensors_model_is_refused"]),
    ("fault", "truncated, empty or garbage checkpoint", ["test_faults.py::test_truncated_or_garbage_checkpoint_names_the_file"]),
    ("fault", "checkpoint from another config", ["test_faults.py::test_checkpoint_of_another_shape_or_kind_names_the_file"]),
    ("fault", "truncated or mismatched saved model", ["test_faults.py::test_truncated_or_mismatched_saved_model_names_the_file"]),
    ("fault", "SIGTERM mid-run", ["test_faults.py::test_signal_mid_run_writes_a_new_checkpoint_and_resume_continues"]),
    ("fault", "Ctrl-C mid-run", ["test_faults.py::test_signal_mid_run_writes_a_new_checkpoint_and_resume_continues"]),
    ("fault", "crash during a checkpoint write", ["test_faults.py::test_crash_while_writing_a_checkpoint_keeps_the_previous_one"]),
    ("fault", "disk full during a checkpoint write", ["test_faults.py::test_full_disk_during_a_checkpoint_write_keeps_the_previous_one"]),
    ("fault", "unwritable output folder", ["test_faults.py::test_unwritable_output_folder_fails_before_training"]),
    ("fault", "disk full before training", ["test_faults.py::test_full_disk_fails_before_training"]),
    ("fault", "NaN loss", ["test_faults.py::test_a_nan_loss_skips_the_step_and_training_goes_on"]),
    ("fault", "non-finite losses in a row", [
        "test_faults.py::test_non_finite_losses_in_a_row_stop_training_naming_the_step",
        "test_faults.py::test_divergence_from_a_huge_learning_rate_is_caught",
    ]),
    ("fault", "non-finite gradient with a finite loss", ["test_faults.py::test_a_non_finite_gradient_with_a_finite_loss_skips_the_step"]),
    ("distributed", "2 ranks vs 1 process", [
        "test_distributed.py::test_two_ranks_compute_the_same_steps_as_one_process",
        "test_distributed.py::test_weights_moved_far_beyond_the_tolerance",
    ]),
    ("distributed", "resume on a different number of ranks", ["test_distributed.py::test_checkpoint_from_two_ranks_resumes_on_one"]),
    ("distributed", "SIGTERM to torchrun", ["test_distributed.py::test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint"]),
    ("bad input", "empty strings", [
        "test_bad_inputs.py::test_tokenizer_encodes_any_text",
        "test_bad_inputs.py::test_corpus_file_is_read_or_refused_by_name",
        "test_bad_inputs.py::test_glue_encoder_feeds_the_model_any_text",
        "test_bad_inputs.py::test_glue_file_edge_cases_name_the_file",
    ]),
    ("bad input", "very long lines", [
        "test_bad_inputs.py::test_tokenizer_encodes_any_text",
        "test_bad_inputs.py::test_token_file_holds_every_document_of_any_corpus",
        "test_bad_inputs.py::test_glue_encoder_feeds_the_model_any_text",
        "test_bad_inputs.py::test_glue_encoder_truncates_a_long_sentence_pair_in_bounded_memory",
        "test_bad_inputs.py::test_glue_file_edge_cases_name_the_file",
    ]),
    ("bad input", "control characters", [
        "test_bad_inputs.py::test_tokenizer_encodes_any_text",
        "test_bad_inputs.py::test_token_file_holds_every_document_of_any_corpus",
        "test_bad_inputs.py::test_glue_file_is_read_or_refused_by_name",
    ]),
    ("bad input", "invalid UTF-8", [
        "test_bad_inputs.py::test_corpus_file_is_read_or_refused_by_name",
        "test_bad_inputs.py::test_bad_bytes_after_the_first_chunk_are_found_and_located",
        "test_bad_inputs.py::test_glue_file_is_read_or_refused_by_name",
        "test_bad_inputs.py::test_glue_file_edge_cases_name_the_file",
    ]),
    ("bad input", "characters split across read chunks", ["test_bad_inputs.py::test_character_split_across_read_chunks_is_valid_utf8"]),
    ("bad input", "mixed scripts", [
        "test_bad_inputs.py::test_tokenizer_encodes_any_sentence_pair",
        "test_bad_inputs.py::test_tokenizer_trains_on_any_corpus",
        "test_bad_inputs.py::test_glue_encoder_feeds_the_model_any_text",
    ]),
    ("bad input", "token streams too short", [
        "test_bad_inputs.py::test_loader_serves_any_stream_or_refuses_it",
        "test_bad_inputs.py::test_too_short_stream_and_foreign_loader_state_are_refused",
    ]),
]

# What issue 6 asks to be shown; the list above may hold more, never less.
REQUIRED = {
    "malicious pickle as checkpoint", "SIGTERM mid-run", "Ctrl-C mid-run", "crash during a checkpoint write",
    "unwritable output folder", "disk full before training", "NaN loss", "non-finite losses in a row",
    "empty strings", "very long lines", "control characters", "invalid UTF-8", "mixed scripts",
    "2 ranks vs 1 process", "resume on a different number of ranks",
}


def defined_tests(filename: str) -> set[str]:
    tree = ast.parse((TESTS / filename).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_listed_test_exists():
    defined = {f: defined_tests(f) for f in HARDENING_FILES}
    missing = [ref for _, _, refs in COVERED for ref in refs
               if ref.split("::")[1] not in defined.get(ref.split("::")[0], set())]
    assert not missing, f"listed but not defined: {missing}"


def test_every_hardening_test_is_counted():
    listed = {ref for _, _, refs in COVERED for ref in refs}
    unlisted = [f"{f}::{name}" for f in HARDENING_FILES for name in sorted(defined_tests(f)) if f"{f}::{name}" not in listed]
    assert not unlisted, f"tests that check something the inventory does not list: {unlisted}"


def test_the_issue_list_is_covered():
    names = [what for _, what, _ in COVERED]
    assert len(names) == len(set(names)), "each fault is listed once"
    assert REQUIRED <= set(names), f"not covered: {sorted(REQUIRED - set(names))}"
    assert all(refs for _, _, refs in COVERED)


def test_readme_lists_every_covered_fault_and_bad_input():
    text = " ".join(README.read_text(encoding="utf-8").lower().split())  # line breaks count as spaces
    absent = [what for _, what, _ in COVERED if what.lower() not in text]
    assert not absent, f"README.md does not list these covered faults / bad inputs: {absent}"
