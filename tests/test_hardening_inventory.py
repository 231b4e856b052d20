"""What the hardening tests check, counted: every fault and bad input below names the tests
that cover it. This test keeps the list honest both ways -- each named test exists, each test
of the hardening files is listed -- and keeps docs/faults.md in step with it, both ways too:
each case listed here is an entry there under its kind, and each entry there is a case here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FAULTS_DOC = REPO / "docs" / "faults.md"
README = REPO / "README.md"
# docs/faults.md: a "## <kind>s" heading per kind, then one "- **<case>**: ..." line per case
DOC_KINDS = {"faults": "fault", "distributed": "distributed", "bad inputs": "bad input",
             "runs never lost or silently changed": "run"}
HARDENING_FILES = ("test_faults.py", "test_bad_inputs.py", "test_distributed.py", "test_run_safety.py",
                   "test_glue_safety.py", "test_cli.py", "test_run_lock.py")

# (kind, what can go wrong, tests "file::function" that show it is handled)
COVERED = [
    ("fault", "malicious pickle as checkpoint", ["test_faults.py::test_malicious_pickle_checkpoint_is_refused_and_never_runs"]),
    ("fault", "pickle disguised as safetensors", ["test_faults.py::test_pickle_disguised_as_safetensors_model_is_refused"]),
    ("fault", "truncated, empty or garbage checkpoint", ["test_faults.py::test_truncated_or_garbage_checkpoint_names_the_file"]),
    ("fault", "checkpoint from another config", ["test_faults.py::test_checkpoint_of_another_shape_or_kind_names_the_file"]),
    ("fault", "checkpoint with settings of another version",
     ["test_faults.py::test_checkpoint_with_settings_of_another_version_names_the_file"]),
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
    ("bad input", "corpus inputs of every form", [
        "test_bad_inputs.py::test_bad_inputs_in_any_form_are_refused_by_name",
        "test_bad_inputs.py::test_the_reader_gives_the_same_documents_whatever_its_reads_and_resumes_at_any_document",
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
    ("run", "--help or an unknown argument to an entry point", [
        "test_cli.py::test_help_and_unknown_arguments_do_no_work",
        "test_cli.py::test_a_kernel_arguments_are_not_the_notebook_arguments",
        "test_cli.py::test_every_notebook_is_covered",
        "test_cli.py::test_the_settings_page_holds_the_environment_table",
    ]),
    ("run", "retraining over an existing tokenizer", ["test_cli.py::test_train_tokenizer_keeps_an_existing_tokenizer_unless_asked"]),
    ("run", "a notebook executed from the command line", ["test_cli.py::test_the_readmes_notebook_commands_run_a_notebook"]),
    ("run", "two pretraining runs into one folder at once", [
        "test_run_lock.py::test_a_second_run_into_a_running_folder_stops_at_once_naming_the_holder",
        "test_run_lock.py::test_a_lock_left_by_a_killed_run_is_taken_over",
        "test_run_lock.py::test_the_lock_names_the_holder_and_is_released_when_the_block_ends",
        "test_run_lock.py::test_a_refused_run_leaves_no_folder_behind",
    ]),
    ("run", "files only their owner can read", [
        "test_run_lock.py::test_files_written_atomically_are_readable_by_others",
        "test_run_lock.py::test_a_pretraining_run_writes_no_private_file",
    ]),
    ("run", "a second pretraining run into a folder that holds one", [
        "test_run_safety.py::test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite",
        "test_run_safety.py::test_overwrite_replaces_the_run_and_keeps_other_files",
    ]),
    ("run", "fine-tuning into a folder that holds results", [
        "test_glue_safety.py::test_fine_tuning_into_a_folder_with_results_is_refused_before_any_work",
        "test_glue_safety.py::test_the_notebook_refuses_to_overwrite_unless_DITBERT_OVERWRITE_is_set",
    ]),
    ("run", "changed settings on resume", [
        "test_run_safety.py::test_resume_takes_every_setting_and_the_corpus_from_the_checkpoint",
        "test_run_safety.py::test_resume_refuses_changed_settings_listing_them",
        "test_run_safety.py::test_resume_accepts_a_listed_change_and_prints_it",
        "test_run_safety.py::test_steps_raised_on_resume_decay_to_the_new_end_from_the_next_step",
    ]),
    ("run", "resume without the corpus, or with another", [
        "test_run_safety.py::test_resume_names_the_missing_corpus_before_any_tokenising",
        "test_run_safety.py::test_resume_refuses_a_changed_corpus_by_its_fingerprint",
    ]),
    ("run", "resume of a finished run", [
        "test_run_safety.py::test_resume_of_a_finished_run_says_so_and_leaves_its_files_alone",
        "test_run_safety.py::test_a_resumed_run_keeps_the_last_validation_perplexity",
    ]),
    ("run", "a tokenizer other than the model's", [
        "test_run_safety.py::test_every_trained_model_records_its_tokenizer",
        "test_run_safety.py::test_resume_refuses_another_tokenizer_naming_both_files",
        "test_glue_safety.py::test_fine_tuning_with_another_tokenizer_is_refused_naming_both_files",
        "test_glue_safety.py::test_a_model_that_recorded_no_tokenizer_is_accepted",
    ]),
    ("run", "rows with too many or too few fields", [
        "test_glue_safety.py::test_an_unquoted_comma_in_a_csv_row_is_a_bad_row_not_a_third_class",
        "test_glue_safety.py::test_rows_with_too_many_or_too_few_fields_in_a_glue_tsv_are_malformed",
    ]),
    ("run", "Ctrl-C while fine-tuning", [
        "test_glue_safety.py::test_ctrl_c_stops_cleanly_and_the_run_is_marked_and_left_out",
        "test_glue_safety.py::test_ctrl_c_in_the_notebook_run_as_a_script_prints_no_traceback",
        "test_glue_safety.py::test_a_run_without_a_finished_record_is_left_out_of_the_table",
    ]),
    ("run", "a stopped fine-tuning command run again", [
        "test_glue_safety.py::test_resume_keeps_what_finished_and_fine_tunes_the_rest",
    ]),
    ("run", "settings out of range or of the wrong type", [
        "test_run_safety.py::test_bad_settings_on_the_command_line_stop_before_any_work",
        "test_run_safety.py::test_each_section_checks_its_values_naming_the_setting",
        "test_run_safety.py::test_saved_settings_are_checked_and_the_presets_pass",
    ]),
    ("run", "a model source that is no model folder", ["test_glue_safety.py::test_a_hugging_face_source_that_is_no_model_is_named_as_such"]),
    ("run", "runs of different models under one label", [
        "test_glue_safety.py::test_a_submission_after_a_new_model_holds_only_the_new_models_runs",
        "test_glue_safety.py::test_runs_of_two_models_under_one_label_are_never_averaged",
    ]),
    ("run", "two fine-tunings into one run folder", [
        "test_glue_safety.py::test_a_second_fine_tuning_into_a_run_folder_stops_at_once_naming_the_first",
        "test_glue_safety.py::test_a_lock_left_by_a_killed_fine_tuning_is_taken_over",
    ]),
    ("run", "the base recipe and the GPU's precision paths never run", [
        "test_run_safety.py::test_base_batch_arithmetic_on_1_to_16_gpus",
        "test_run_safety.py::test_base_recipe_takes_two_optimizer_steps_on_the_cpu_with_accumulation",
        "test_run_safety.py::test_mixed_precision_pretraining_steps_on_the_cpu",
    ]),
]

# What issue 6 asks to be shown; the list above may hold more, never less.
REQUIRED = {
    "malicious pickle as checkpoint", "SIGTERM mid-run", "Ctrl-C mid-run", "crash during a checkpoint write",
    "unwritable output folder", "disk full before training", "NaN loss", "non-finite losses in a row",
    "empty strings", "very long lines", "control characters", "invalid UTF-8", "mixed scripts",
    "2 ranks vs 1 process", "resume on a different number of ranks",
} | {what for kind, what, _ in COVERED if kind == "run"}


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


def documented_cases(text: str) -> set[tuple[str, str]]:
    """(kind, case) for every "- **case**" entry of docs/faults.md, the kind from the heading above it."""
    cases, kind = set(), None
    for line in text.splitlines():
        heading = re.match(r"^## (.+?)\s*$", line)
        if heading:
            kind = DOC_KINDS.get(heading.group(1).lower())
            continue
        entry = re.match(r"^- \*\*(.+?)\*\*", line)
        if entry:
            assert kind is not None, f"docs/faults.md: {entry.group(1)!r} is under no known heading {sorted(DOC_KINDS)}"
            cases.add((kind, entry.group(1)))
    return cases


def test_the_faults_page_lists_exactly_the_covered_cases():
    documented = documented_cases(FAULTS_DOC.read_text(encoding="utf-8"))
    covered = {(kind, what) for kind, what, _ in COVERED}
    assert not covered - documented, f"docs/faults.md does not list these covered cases: {sorted(covered - documented)}"
    assert not documented - covered, f"docs/faults.md lists cases no test is named for: {sorted(documented - covered)}"


def test_documented_cases_reads_kinds_and_entries():
    text = "## Faults\n\n- **NaN loss**: skipped.\n- plain bullet\n\n## Bad inputs\n- **empty strings**: read.\n"
    assert documented_cases(text) == {("fault", "NaN loss"), ("bad input", "empty strings")}


def test_the_readme_links_the_faults_page():
    assert "docs/faults.md" in README.read_text(encoding="utf-8")
