"""Test set-up: 8 fake CPU devices (for sharding tests) before anything touches JAX."""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's quick compile (jax's `jax_disable_most_optimizations`: backend optimisation level 0, no
# expensive LLVM passes). Most of the suite's time is compiling tiny programs that then run a few
# steps. The tests compare runs with runs, or with values computed by hand within tolerances, so
# they hold at any level (the whole suite passes at both; docs/testing.md). Set in the
# environment, so the main.py processes that tests start compile the same way.
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite with XLA's defaults.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# The main.py processes of the kill-and-resume tests get a compilation cache of their own (the
# JAX_COMPILATION_CACHE_DIR those tests set in their temporary folder). At the quick settings most of their programs compile in
# under JAX's default threshold for caching (1 s), so the resumed runs compiled them again: cache
# every program. A resumed tiny AOS4Rec run (`aos4rec.py:tiny,both`, 14 steps) took 34.7 s with the
# default threshold (8 entries cached) and 30.1 s with these (26 entries); test_seq2seq_training.py's
# SIGKILL test 77 and 71 s -> 70 and 69 s (back to back, beside two training jobs).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# JAX's persistent compilation cache, shared by the pytest-xdist workers: dozens of tests train
# the same tiny configs in-process, and each run jit-compiles its steps afresh. A cached
# executable is the one the compiler would make again (same HLO, same options, same jax), so
# results are unchanged; measured: tests/test_critic_stop.py's resume test 332 s -> 182 s on the
# 2-core machine. Set through jax.config, not the environment, so the main.py processes that
# tests start (and SIGKILL) compile on their own and never see a half-written entry. A damaged
# or half-written entry is only a warning and a recompile. AOS4REC_TEST_COMPILE_CACHE=off
# compiles everything; a folder there moves the cache.
_CACHE = os.environ.get("AOS4REC_TEST_COMPILE_CACHE",
                        os.path.join(tempfile.gettempdir(), f"aos4rec_jax-test-compile-cache-{os.getuid()}"))

import jax  # noqa: E402

from aos4rec_jax import sharding  # noqa: E402

sharding.use_fake_cpu_devices(8)

if _CACHE != "off":
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ------------------------------------------------------------------------------ one device by default
# The trainer's default mesh (config.mesh.num_devices = 0) is "every device": 8 fake CPU devices in
# the test processes. Most tests check a method, a phase or a file, not data parallelism, and a
# tiny run split 8 ways on a 2-core machine spends most of its time partitioning, compiling and
# synchronizing 8 programs: one in-process SSRGAN run of tests/test_critic_stop.py took 44 s on 8
# devices and 24 s on 1 (its second run in one process, warm compilation cache). So here "every
# device" is the first device: for every test and every fixture, module-scoped ones included
# (they are set up before any function-scoped fixture could patch this). A test marked
# `@pytest.mark.all_devices` gets the real default, all 8, for its own calls. A mesh built from
# devices a test names (the 1-vs-8 tests of test_seq2seq_training.py, test_fake_devices.py, the
# packed-step tests) and config.mesh.num_devices > 0 are left as they are; the main.py processes
# tests start see one CPU device anyway. docs/testing.md has the measurement.
import pytest  # noqa: E402

_every_device_mesh = sharding.make_mesh


def _first_device_mesh(devices=None):
    return _every_device_mesh(jax.devices()[:1] if devices is None else devices)


sharding.make_mesh = _first_device_mesh


@pytest.fixture(autouse=True)
def _all_devices_when_marked(request, monkeypatch):
    if request.node.get_closest_marker('all_devices') is not None:
        monkeypatch.setattr(sharding, 'make_mesh', _every_device_mesh)
    yield


# ------------------------------------------------------------------------------ the smoke set
# `python -m pytest -m "not slow"` is the smoke set (about two minutes); `python -m pytest` (CI)
# runs everything. Besides the tests decorated with @pytest.mark.slow, these are marked slow here
# (by function name, every parametrization): each took 4 s or more when every test file was timed
# alone with `--durations=0` (2026-12-04, 2-core CPU shared with a training job), or shares a
# module fixture with one that did. tests/test_cli_listing.py checks that every name exists.
SLOW = {
    'test_pack_positions.py': ('test_packed_loss_and_gradient_equal_the_padded_ones',),
    'test_pack_sequences.py': ('test_packed_network_loss_and_gradient_equal_the_padded_ones',
                               'test_train_steps_on_the_packed_network_equal_unpacked_and_over_the_cap_fall_back'),
    'test_aos4rec.py': ('test_oracle_context_bans_and_picks_bleu_oracle',
                        'test_oracle_loss_equals_mle_at_p1_and_gradient_skips_search'),
    'test_cli_listing.py': ('test_main_py_list_prints_the_listing', 'test_help_shows_the_usage_lines_and_the_listing'),
    'test_cli_runs.py': ('test_evaluate_writes_tagged_files_and_keeps_the_originals',
                         'test_recommend_csv_input_orders_by_timestamp',
                         'test_recommend_raw_ids_unknown_items_and_empty_histories'),
    'test_data_prep_seqlines.py': ('test_s3rec_files_give_the_readme_counts',),
    'test_decoding.py': ('test_batch_elements_are_independent', 'test_beam_search_finds_what_greedy_misses',
                         'test_candidates_restrict_generation'),
    'test_reliability.py': ('test_divergence_never_reaches_a_checkpoint_and_a_lower_rate_resumes',
                            'test_a_torn_last_log_line_is_repaired_on_resume_and_a_damaged_middle_line_refused',
                            'test_evaluate_refuses_damaged_best_parameters_in_one_line',
                            'test_a_loss_a_million_times_its_start_is_warned_about',
                            'test_a_second_process_on_a_workdir_is_refused_with_the_holders_pid'),
    'test_faults.py': ('test_a_preemption_between_two_log_lines_saves_that_step_and_the_rerun_ends_as_an_uninterrupted_one',
                       'test_on_several_hosts_every_process_stops_at_the_same_step',
                       'test_a_full_disk_stops_training_at_the_save_that_does_not_fit',
                       # these share the `trained` fixture
                       'test_a_changed_data_folder_is_refused_by_resume_evaluate_and_recommend',
                       'test_a_failed_start_leaves_the_workdir_reusable',
                       'test_a_damaged_prepared_file_is_named_in_one_line',
                       'test_a_predictions_file_that_cannot_be_scored_is_one_line',
                       'test_recommend_never_clobbers_and_names_a_bad_input_line',
                       'test_a_beam_wider_than_the_item_set_is_refused',
                       'test_evaluate_and_recommend_on_a_folder_without_checkpoints_create_nothing'),
    'test_irgan.py': ('test_tiny_run_through_main_goes_through_both_phases_and_writes_test_json',),
    'test_fake_devices.py': ('test_gru4rec_step_on_eight_fake_devices_does_not_deadlock',
                             'test_gru4rec_trains_alike_on_one_and_eight_devices'),
    'test_multiprocess.py': ('test_two_processes_train_like_one_and_their_run_loads_here',),
    'test_gpt.py': ('test_decode_step_equals_teacher_forcing_and_the_next_item_scores',
                    'test_tiny_run_through_main_learns',
                    'test_every_strategy_on_tiny_bans_history_and_generated_items'),
    'test_guard_next_item.py': ('test_bpr_learns_the_users_cluster',
                                'test_sequence_models_learn_the_successor_function'),
    'test_guard_runs.py': ('test_bfloat16_training_learns_with_float32_master_weights',
                           'test_divergence_stops_the_run_without_results',
                           'test_evaluate_params_last_best_and_splits', 'test_leave_one_out_end_to_end',
                           'test_no_generated_item_is_in_the_history', 'test_sample_at_a_tiny_temperature_is_greedy',
                           'test_sampling_strategies_through_evaluate_and_recommend',
                           'test_select_by_nll_oracle_keeps_the_lowest',
                           # these share the tf_run / pop_run fixtures
                           'test_recommend_bans_the_input_history', 'test_sampled_lists_come_from_the_candidates',
                           'test_poprec_lists_are_the_most_popular_items',
                           'test_kept_parameters_are_the_best_validation_step'),
    'test_guard_ssrgan.py': ('test_a_round_makes_g_steps_generator_and_d_steps_critic_updates',
                             'test_critic_learns_to_score_real_lists_above_generated',
                             'test_generator_update_raises_the_item_a_fixed_critic_rewards',
                             'test_gradient_penalty_pulls_the_input_gradient_norm_to_one',
                             'test_lipschitz_gp_td_weight_and_clip_switches'),
    'test_methods.py': ('test_next_item_lists_topk_or_fed_back_through_a_decoder',
                        'test_next_item_run_extended_from_its_checkpoint_ends_where_one_run_ends',
                        'test_next_item_tiny_config_trains_and_evaluates'),
    'test_models.py': ('test_cached_decoding_matches_teacher_forcing', 'test_gradients_finite',
                       'test_gru_init_is_orthogonal_without_lapack_qr'),
    'test_seq2seq_training.py': ('test_eight_devices_equal_one', 'test_tiny_run_end_to_end'),
    'test_ssrgan.py': ('test_actor_log_probs_are_those_of_the_sampler',
                       'test_critic_scores_every_prefix_and_successor_in_one_pass',
                       'test_generator_update_weights_and_the_mle_only_control',
                       'test_gradient_penalty_is_per_user'),
    'test_summary.py': ('test_summary_names_the_kept_step_every_metric_poprec_and_the_wall_time',
                        'test_poprec_run_says_it_has_no_training_and_writes_no_checkpoint',
                        'test_evaluate_and_recommend_name_the_run_step_and_parameters',
                        'test_decoding_flags_a_method_does_not_read_are_warned_about'),
    'test_trainer.py': ('test_poprec_real_data_via_cli',),
}


def pytest_collection_modifyitems(config, items):
    import pytest
    for item in items:
        names = SLOW.get(os.path.basename(str(item.fspath)), ())
        if getattr(item, 'originalname', item.name) in names:
            item.add_marker(pytest.mark.slow)
