"""Hand mutation testing: apply each listed bug to a copy of the tree and run the tests that must
notice it.

    python -m tests.mutation_check                 # every mutation (about 15-25 min on 2 cores)
    python -m tests.mutation_check --only M2a M5   # some of them
    python -m tests.mutation_check --list          # the list, one line each
    python -m tests.mutation_check --json out.json # also write the outcome as JSON

A mutation is (id, what it breaks, file, the exact text to replace, its replacement, the tests
that must fail). For each one the tree is copied (the files git tracks plus untracked files that
are not ignored) to a temporary folder, the text is replaced there (it must occur exactly once:
tests/test_mutation_list.py checks that on every run of the suite, so the list cannot silently go
stale when code moves), and pytest runs the named tests in the copy. "killed" means at least one
of them failed; "survived" is a hole in the test suite. The clean tree is never modified.

Why hand mutations and not mutmut: mutmut generates hundreds of mutants per module and runs the
tests for each; a test of the layer that produces reported numbers trains a tiny model (10-60 s
on the CI machine), so a mutmut run over trainer/evaluation/ssrgan would take days here. The list
below is the set of wiring bugs an audit (issue 17) found unguarded, plus the ones met since.
docs/testing.md explains how to add one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: list[Mutation] = [
    # ---- the seven of the issue-17 audit ------------------------------------------------------
    Mutation('M1a', "critic: the sign of Eq. 7's term flipped (the critic prefers generated lists)",
             'aos4rec_jax/ssrgan.py',
             'total = w + a.td_weight * td + a.gp_weight * gp',
             'total = -w + a.td_weight * td + a.gp_weight * gp',
             ('tests/test_guard_ssrgan.py::test_critic_learns_to_score_real_lists_above_generated',)),
    Mutation('M1b', 'critic: the gradient penalty dropped from the loss',
             'aos4rec_jax/ssrgan.py',
             'total = w + a.td_weight * td + a.gp_weight * gp',
             'total = w + a.td_weight * td',
             ('tests/test_guard_ssrgan.py::test_gradient_penalty_pulls_the_input_gradient_norm_to_one',)),
    Mutation('M1c', "generator: the sign of Eq. 4's loss flipped (it descends the critic)",
             'aos4rec_jax/ssrgan.py',
             'total = float(a.gan_adv_weight) * adv_loss',
             'total = -float(a.gan_adv_weight) * adv_loss',
             ('tests/test_guard_ssrgan.py::test_generator_update_raises_the_item_a_fixed_critic_rewards',)),
    Mutation('M2a', 'evaluation: history items no longer banned',
             'aos4rec_jax/evaluation.py',
             'max_hist, ban = ds.max_history, info.ban_history',
             'max_hist, ban = ds.max_history, False',
             ('tests/test_guard_runs.py::test_no_generated_item_is_in_the_history',)),
    Mutation('M2b', 'recommend: history items no longer banned',
             'aos4rec_jax/recommend.py',
             'if info.ban_history:',
             'if False:',
             ('tests/test_guard_runs.py::test_recommend_bans_the_input_history',)),
    Mutation('M3a', 'seq2seq: the sampled protocol ignores the candidate lists',
             'aos4rec_jax/decoding.py',             # generate_sampled_and_full
             "step_fn, state, r1, candidates=batch['candidates'],",
             'step_fn, state, r1, candidates=None,',
             ('tests/test_guard_runs.py::test_sampled_lists_come_from_the_candidates',)),
    Mutation('M3b', 'PopRec: the sampled protocol ignores the candidate lists',
             'aos4rec_jax/evaluation.py',           # topk_sampled_and_full
             "scores, k, candidates=batch['candidates'],",
             "scores, k, candidates=None,",
             ('tests/test_guard_runs.py::test_sampled_lists_come_from_the_candidates',
              'tests/test_guard_runs.py::test_poprec_lists_are_the_most_popular_items')),
    Mutation('M4a', 'model selection keeps the worst validation NDCG',
             'aos4rec_jax/trainer.py',
             "score = {'ndcg': ndcg,",
             "score = {'ndcg': -ndcg,",
             ('tests/test_guard_runs.py::test_kept_parameters_are_the_best_validation_step',)),
    Mutation('M4b', 'select_by=nll_oracle keeps the highest oracle NLL',
             'aos4rec_jax/trainer.py',
             "'nll_oracle': -rec.get('nll_oracle', math.inf)",
             "'nll_oracle': rec.get('nll_oracle', -math.inf)",
             ('tests/test_guard_runs.py::test_select_by_nll_oracle_keeps_the_lowest',)),
    Mutation('M4c', 'select_by=full_ndcg keeps the best sampled-NDCG step',
             'aos4rec_jax/trainer.py',
             "'full_ndcg': summ['full'][f'ndcg@{info.k}'],",
             "'full_ndcg': ndcg,",
             ('tests/test_guard_runs.py::test_select_by_full_ndcg_keeps_the_best_all_items_validation',)),
    Mutation('M5', 'PopRec ranks the least popular items first',
             'aos4rec_jax/methods/poprec.py',
             "topk_sampled_and_full(params['counts'],",
             "topk_sampled_and_full(-params['counts'],",
             ('tests/test_guard_runs.py::test_poprec_lists_are_the_most_popular_items',)),
    Mutation('M6', 'NLL_oracle ignores the history (prefix zeroed)',
             'aos4rec_jax/datasets.py',
             'return params, to_token, to_token[prefix]',
             'return params, to_token, 0 * to_token[prefix]',
             ('tests/test_guard_runs.py::test_oracle_nll_on_a_two_state_oracle',)),
    Mutation('M7', "Eq. 8's successors also ban the item at the current position",
             'aos4rec_jax/aos4rec.py',
             'earlier = jnp.cumsum(seen, axis=1) - seen',
             'earlier = jnp.cumsum(seen, axis=1)',
             ('tests/test_aos4rec.py::test_successors_may_repeat_the_current_item',
              'tests/test_aos4rec.py::test_successor_frequencies_follow_the_allowed_softmax')),
    # ---- met while writing the guards (issue 17) -----------------------------------------------
    Mutation('M8', 'oracular learning: p stays at its epoch-0 value (no decay)',
             'aos4rec_jax/ssrgan.py',
             "epoch = state['step'].astype(jnp.float32) * self.batch_size / self.seq2seq_windows",
             "epoch = 0.0 * state['step'].astype(jnp.float32)",
             ('tests/test_ssrgan.py::test_gru_tiny_run_goes_through_every_phase',)),
    Mutation('M9', 'sampling divides the logits by T squared',
             'aos4rec_jax/decoding.py',
             'inv_temperature = 1.0 / _temperature(temperature)',
             'inv_temperature = 1.0 / _temperature(temperature) ** 2',
             ('tests/test_decoding.py::test_sample_frequencies_follow_tempered_softmax',)),
    Mutation('M10', 'evaluate --params is ignored (always the kept parameters)',
             'aos4rec_jax/evaluate.py',
             'which=a.params)',
             "which='best')",
             ('tests/test_guard_runs.py::test_evaluate_params_last_best_and_splits',)),
    Mutation('M11', 'the divergence stop never fires',
             'aos4rec_jax/trainer.py',
             'bad = {k: v for k, v in m.items() if not math.isfinite(v)}',
             'bad = {}',
             ('tests/test_guard_runs.py::test_divergence_stops_the_run_without_results',)),
    Mutation('M12', "lipschitz='clip' does not clip",
             'aos4rec_jax/ssrgan.py',
             "if a.lipschitz == 'clip':",
             'if False:',
             ('tests/test_guard_ssrgan.py::test_lipschitz_gp_td_weight_and_clip_switches',)),
    Mutation('M13', "the TD(0) term of Eq. 8 dropped from the critic's loss",
             'aos4rec_jax/ssrgan.py',
             'total = w + a.td_weight * td + a.gp_weight * gp',
             'total = w + a.gp_weight * gp',
             ('tests/test_guard_ssrgan.py::test_lipschitz_gp_td_weight_and_clip_switches',)),
    Mutation('M14', 'an SSRGAN round makes one generator update whatever g_steps says',
             'aos4rec_jax/ssrgan.py',
             'g_keys = jax.random.split(jax.random.fold_in(key, 0), int(self.a.g_steps))',
             'g_keys = jax.random.split(jax.random.fold_in(key, 0), 1)',
             ('tests/test_guard_ssrgan.py::test_a_round_makes_g_steps_generator_and_d_steps_critic_updates',)),
    Mutation('M15', 'NDCG discounts by log2(i + 0.5) instead of log2(i + 1)',
             'aos4rec_jax/metrics.py',
             'discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)',
             'discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 1.5)',
             ('tests/test_metrics.py::test_individual_functions_on_hand_values',)),
    Mutation('M16', 'the reference NDCG (metrics_ref) normalises over K, not min(K, m)',
             'aos4rec_jax/metrics_ref.py',
             'idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, m) + 1))',
             'idcg = sum(1.0 / math.log2(i + 1) for i in range(1, k + 1))',
             ('tests/test_metrics.py::test_summarize_predictions_and_cli',)),
    Mutation('M17', 'MRR gives the rank instead of its reciprocal',
             'aos4rec_jax/metrics.py',
             'value = jnp.where(jnp.any(in_target, axis=-1), 1.0 / (first + 1.0), 0.0)',
             'value = jnp.where(jnp.any(in_target, axis=-1), 1.0 * (first + 1.0), 0.0)',
             ('tests/test_metrics.py::test_individual_functions_on_hand_values',)),
    Mutation('M18', 'data_prep: --ban-history / --no-ban-history ignored (the profile decides)',
             'data_prep/cli.py',
             'ban_history=args.ban_history)',
             'ban_history=None)',
             ('tests/test_guard_data_prep.py::test_ban_history_flags_override_the_profile',)),
    Mutation('M19', 'data_prep: --max-len lets users one longer through',
             'data_prep/pipeline.py',
             'ok_user &= lens <= settings.max_len',
             'ok_user &= lens <= settings.max_len + 1',
             ('tests/test_guard_data_prep.py::test_max_len_drops_longer_users',)),
    Mutation('M20', "data_prep: --delimiter tab read as a comma",
             'data_prep/cli.py',
             r'"tab": "\t"',
             '"tab": ","',
             ('tests/test_guard_data_prep.py::test_tab_delimiter',)),
    Mutation('M21', 'the oracle is the beam with the LOWEST BLEU',
             'aos4rec_jax/aos4rec.py',
             'best = jnp.argmax(scores, axis=-1)',
             'best = jnp.argmin(scores, axis=-1)',
             ('tests/test_aos4rec.py::test_oracle_context_bans_and_picks_bleu_oracle',)),
    Mutation('M22', "Eq. 4's loss function without its minus sign",
             'aos4rec_jax/aos4rec.py',
             'return -_masked_mean(advantage * log_probs.astype(jnp.float32), mask)',
             'return _masked_mean(advantage * log_probs.astype(jnp.float32), mask)',
             ('tests/test_aos4rec.py::test_generator_loss_eq4_by_hand',)),
    Mutation('M23', "Eq. 7's loss function without its minus sign",
             'aos4rec_jax/aos4rec.py',
             'return -_masked_mean(diff, mask)',
             'return _masked_mean(diff, mask)',
             ('tests/test_aos4rec.py::test_critic_loss_eq7_by_hand',)),
    Mutation('M24', 'no checkpoint at the seq2seq -> SSRGAN boundary (unless periodic)',
             'aos4rec_jax/trainer.py',
             'do_ckpt = do_ckpt or entered',
             'pass',
             ('tests/test_guard_resume.py::test_killed_in_every_aos4rec_phase_resumes_to_the_same_end',)),
    Mutation('M25', 'a resumed run does not truncate the validation history (duplicated lines)',
             'aos4rec_jax/trainer.py',
             "_truncate_jsonl(os.path.join(mdir, 'valid_history.jsonl'), start)",
             'pass',
             ('tests/test_guard_resume.py::test_killed_in_every_aos4rec_phase_resumes_to_the_same_end',)),
    Mutation('M26', "data_prep: --max-len none means the profile's maximum",
             'data_prep/cli.py',
             'return "none"',
             'return None',
             ('tests/test_data_prep.py::test_max_len_flag_over_a_profile_maximum',)),
    Mutation('M27', 'make_mesh ignores the devices it is given (the 1-vs-8 check compares 8 with 8)',
             'aos4rec_jax/sharding.py',
             'devices = np.asarray(jax.devices() if devices is None else devices)',
             'devices = np.asarray(jax.devices())',
             ('tests/test_seq2seq_training.py::test_eight_devices_equal_one',)),
    # ---- issue 9: the method contract and the next-item baselines --------------------------------
    Mutation('M28', 'next-item scores read at the first position of the history, not the last',
             'aos4rec_jax/methods/next_item.py',
             'h = h[:, -1]',
             'h = h[:, 0]',
             ('tests/test_guard_next_item.py::test_sequence_models_learn_the_successor_function',)),
    Mutation('M29', 'BCE with sampled negatives pushes the negatives up',
             'aos4rec_jax/methods/losses.py',
             'jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)',
             'jnp.sum(jax.nn.log_sigmoid(neg), axis=-1)',
             ('tests/test_methods.py::test_bce_sampled_by_hand',
              'tests/test_guard_next_item.py::test_sequence_models_learn_the_successor_function')),
    Mutation('M30', 'BERT4Rec predicts without appending [MASK]',
             'aos4rec_jax/methods/bert4rec.py',
             'seq = shift_in(history, jnp.full((history.shape[0],), self.mask_id, history.dtype))',
             'seq = history',
             ('tests/test_guard_next_item.py::test_sequence_models_learn_the_successor_function',)),
    Mutation('M31', 'leave-one-out sampled scene bans the history (a repeated target is unrankable)',
             'aos4rec_jax/evaluation.py',
             'banned_sampled = jnp.zeros_like(banned) if loo else banned',
             'banned_sampled = banned',
             ('tests/test_guard_next_item.py::test_loo_sampled_scene_ranks_a_repeated_target_full_scene_bans_it',)),
    Mutation('M32', 'SASRec attention without its causal mask (the future leaks into training)',
             'aos4rec_jax/models/sasrec.py',
             'attn_mask = causal[None, None] & mask[:, None, None, :]',
             'attn_mask = mask[:, None, None, :]',
             ('tests/test_next_item_models.py::test_causal',)),
    Mutation('M33', "poprec.counts='all' counts the train parts only",
             'aos4rec_jax/methods/poprec.py',
             "if counts == 'all':",
             "if False:",
             ('tests/test_methods.py::test_poprec_counts_train_or_all',)),
    Mutation('M34', 'BPR-MF ignores the user (scores the folded-in history for everyone)',
             'aos4rec_jax/models/bpr.py',
             'h = jnp.where(known[:, None], rows, h)',
             'h = h',
             ('tests/test_guard_next_item.py::test_bpr_learns_the_users_cluster',)),
    Mutation('M35', 'a non-finite train state (or best parameters) is saved',
             'aos4rec_jax/checkpoint.py',
             "raise NonFiniteState(f'{what} is not finite (NaN or inf)')",
             "pass",
             ('tests/test_reliability.py::test_divergence_never_reaches_a_checkpoint_and_a_lower_rate_resumes',)),
    Mutation('M36', 'restore ignores the recorded checksums',
             'aos4rec_jax/checkpoint.py',
             'bad = [i for i, (a, b) in enumerate(zip(sums, want)) if list(a) != list(b)]',
             'bad = []',
             ('tests/test_reliability.py::test_checksums_are_exact_and_catch_one_changed_number',
              'tests/test_reliability.py::test_evaluate_refuses_damaged_best_parameters_in_one_line')),
    # ---- issue 15, second part ------------------------------------------------------------------
    Mutation('M37', 'a preemption stop does not save the step it stops at',
             'aos4rec_jax/trainer.py',
             '                stop(step, state, signum, saved=do_ckpt)',
             '                stop(step, state, signum, saved=True)',
             ('tests/test_faults.py::test_a_preemption_between_two_log_lines_saves_that_step_and_the_rerun_ends_as_an_uninterrupted_one',)),
    Mutation('M38', 'the resumed run forgets the step metrics accumulated before a preemption save',
             'aos4rec_jax/trainer.py',
             "        pending = meta.pop('pending_metrics', None)",
             "        pending = meta.pop('pending_metrics', None) and None",
             ('tests/test_faults.py::test_a_preemption_between_two_log_lines_saves_that_step_and_the_rerun_ends_as_an_uninterrupted_one',)),
    Mutation('M39', 'a changed data folder is accepted',
             'aos4rec_jax/datasets.py',
             '    if changed:\n        raise RunError',
             '    if False:\n        raise RunError',
             ('tests/test_faults.py::test_a_changed_data_folder_is_refused_by_resume_evaluate_and_recommend',)),
    Mutation('M40', 'no free-space check before a save',
             'aos4rec_jax/checkpoint.py',
             '        if free < need:',
             '        if False:',
             ('tests/test_faults.py::test_a_full_disk_stops_training_at_the_save_that_does_not_fit',)),
    Mutation('M41', 'recommend replaces an existing output without --overwrite',
             'aos4rec_jax/recommend.py',
             '    if os.path.exists(output) and not overwrite:',
             '    if False:',
             ('tests/test_faults.py::test_recommend_never_clobbers_and_names_a_bad_input_line',)),
    # ---- 2026-12-05: multi-host, ratings, SeqGAN's roll-outs and init_from ----------------------
    Mutation('M42', 'a restored array keeps the device layout it was saved with (a run saved on '
             'two hosts or 8 devices cannot be read on one)',
             'aos4rec_jax/checkpoint.py',
             '        abstract = _on_this_host(abstract)',
             '        abstract = abstract',
             ('tests/test_multiprocess.py::test_two_processes_train_like_one_and_their_run_loads_here',)),
    Mutation('M43', 'data_prep: the ratings are not reordered with the (user, time) sort',
             'data_prep/pipeline.py',
             '        r = r[order]',
             '        r = r',
             ('tests/test_data_prep_ratings.py::test_ratings_follow_their_items_through_sort_kcore_and_length_filter',)),
    Mutation('M44', "CRR: a transition's reward is the rating of its input item, not of the action",
             'aos4rec_jax/data.py',
             '    ratings = jnp.where(real, data.ratings[tidx], 0.0)',
             '    ratings = jnp.where(real, data.ratings[iidx], 0.0)',
             ('tests/test_crr.py::test_rewards_of_random_batches_are_the_ratings_of_the_actions_and_padding_gets_none',)),
    Mutation('M45', "SeqGAN: the roll-outs ignore their forced prefixes (every roll-out is a "
             "fresh list)",
             'aos4rec_jax/decoding.py',
             '        if prefix is not None:\n            index, chosen = _force(',
             '        if False:\n            index, chosen = _force(',
             ('tests/test_seqgan.py::test_monte_carlo_rewards_are_the_recorded_ones',)),
    Mutation('M46', "SeqGAN: init_from is ignored (the adversarial phases start from the run's "
             "own untrained generator)",
             'aos4rec_jax/methods/seqgan.py',
             '        elif self.o.init_from:',
             '        elif False:',
             ('tests/test_seqgan.py::test_init_from_starts_from_the_sources_kept_generator_and_resumes_from_its_own_checkpoint',)),
    Mutation('M47', "CRR: init_from is ignored (stage 2 starts from the run's own untrained policy)",
             'aos4rec_jax/methods/crr.py',
             '        elif P == 0 and self.opts.init_from:',
             '        elif False:',
             ('tests/test_crr.py::test_stage_2_starts_from_another_runs_kept_policy_and_another_network_is_refused',)),
    Mutation('M48', 'AOS4Rec critic_holdout: the critic updates draw every user\'s windows',
             'aos4rec_jax/ssrgan.py',
             "        k_drop = jax.random.fold_in(key, 4)            # the critic's dropout (critic_dropout > 0)\n"
             "        b, banned = self.batch(self.part(data, 'critic'), k_batch)",
             "        k_drop = jax.random.fold_in(key, 4)            # the critic's dropout (critic_dropout > 0)\n"
             "        b, banned = self.batch(data, k_batch)",
             ('tests/test_critic_holdout.py::test_each_phase_draws_from_its_own_users',)),
    Mutation('M49', 'AOS4Rec critic_holdout: the seq2seq phase also trains on the held-out users',
             'aos4rec_jax/ssrgan.py',
             "        data = self.part(data, 'seq2seq')",
             "        data = data",
             ('tests/test_critic_holdout.py::test_each_phase_draws_from_its_own_users',
              'tests/test_critic_holdout.py::test_mle_step_draws_from_the_seq2seq_users')),
    Mutation('M50', 'AOS4Rec critic_init=generator: the critic keeps its own parameters',
             'aos4rec_jax/critic.py',
             '            out[path] = jnp.asarray(g, leaf.dtype)',
             '            out[path] = leaf',
             ('tests/test_critic_init.py::test_from_generator_copies_the_backbone_and_keeps_the_head',)),
    Mutation('M51', 'aos4rec.gan_start_competes: the SSRGAN phase start is not validated',
             'aos4rec_jax/trainer.py',
             '            if ph.validate_on_entry:',
             '            if False:',
             ('tests/test_gan_start_competes.py::'
              'test_the_start_is_kept_when_no_round_beats_it_and_not_when_the_option_is_off',)),
    Mutation('M52', 'aos4rec.critic_keep_best: the last critic goes on into the SSRGAN phase',
             'aos4rec_jax/methods/aos4rec.py',
             "        if 'kept_critic_step' in rec:",
             '        if False:',
             ('tests/test_critic_stop.py::test_keep_best_starts_the_ssrgan_phase_from_the_best_'
              'measured_critic_and_resumes_identical',)),
    Mutation('M53', 'aos4rec.critic_keep_best: an improving measurement does not copy the critic',
             'aos4rec_jax/ssrgan.py',
             "            improved = measured & (new['best_step'] != watch['best_step'])",
             '            improved = measured & False',
             ('tests/test_critic_stop.py::test_keep_best_starts_the_ssrgan_phase_from_the_best_'
              'measured_critic_and_resumes_identical',)),
    Mutation('M54', 'aos4rec.critic_frozen: the frozen parameters get Adam updates too',
             'aos4rec_jax/ssrgan.py',
             "            return 'frozen' if f else 'train'",
             "            return 'train'",
             ('tests/test_critic_frozen.py::test_a_critic_update_leaves_the_frozen_parameters_'
              'bit_identical',)),
    Mutation('M55', 'aos4rec.critic_frozen: weight clipping clips the frozen parameters',
             'aos4rec_jax/ssrgan.py',
             '                lambda x, f: x if f else jnp.clip(x, -a.clip_value, a.clip_value), cp, frozen)',
             '                lambda x, f: jnp.clip(x, -a.clip_value, a.clip_value), cp, frozen)',
             ('tests/test_critic_frozen.py::test_a_critic_update_leaves_the_frozen_parameters_'
              'bit_identical',)),
    Mutation('M56', 'seqgan.start_competes: the generator that starts the rounds is not validated',
             'aos4rec_jax/methods/seqgan.py',
             "                     entered_key='seqgan_gan_entered', validate_on_entry=True)",
             "                     entered_key='seqgan_gan_entered', validate_on_entry=False)",
             ('tests/test_stage_start_competes.py::'
              'test_the_start_is_kept_when_no_update_beats_it_and_not_when_the_option_is_off[seqgan]',)),
    Mutation('M57', 'crr.start_competes: the policy that starts stage 2 is not validated',
             'aos4rec_jax/methods/crr.py',
             '                    validate_on_entry=bool(self.opts.start_competes))',
             '                    validate_on_entry=False)',
             ('tests/test_stage_start_competes.py::'
              'test_the_start_is_kept_when_no_update_beats_it_and_not_when_the_option_is_off[crr]',)),
    Mutation('M58', 'trainer: a phase entered without an enter hook is not recorded as entered',
             'aos4rec_jax/trainer.py',
             '            meta = dict(meta, **{ph.entered_key: meta.get(ph.entered_key, int(step))})',
             '            pass',
             ('tests/test_phase_entry.py::test_a_phase_without_enter_hook_validates_its_start_once',)),
    Mutation('M59', 'inverse-CDF draws (sampling.py): each draw lands one item early',
             'aos4rec_jax/sampling.py',
             '    return jnp.minimum(blk * bs + i, v - 1).astype(jnp.int32)',
             '    return jnp.clip(blk * bs + i - 1, 0, v - 1).astype(jnp.int32)',
             ('tests/test_aos4rec.py::test_successor_frequencies_follow_the_allowed_softmax',)),
    Mutation('M60', 'GRU4Rec+ additional negatives drawn uniformly (padding included), not by popularity',
             'aos4rec_jax/methods/gru4rec.py',
             '        return jnp.searchsorted(cdf, r).astype(jnp.int32)',
             '        return jax.random.randint(key, (n,), 0, cdf.shape[0]).astype(jnp.int32)',
             ('tests/test_methods.py::test_gru4rec_extra_negatives_follow_popularity_to_the_alpha',)),
    Mutation('M61', 'Table 3 ignores its ledger: a run whose folder is gone is "not run"',
             'experiments/table3.py',
             '                    kept = ledger.lookup(key, cmd)',
             '                    kept = None',
             ('tests/test_experiment_drivers.py::test_table3_results_survive_lost_run_folders',)),
    Mutation('M62', 'Table 3 replaces a row with more seeds by a poorer collection',
             'experiments/table3.py',
             "        if prev is not None and int(float(prev['seeds'] or 0)) > rec['seeds']:",
             "        if prev is not None and int(float(prev['seeds'] or 0)) < rec['seeds']:",
             ('tests/test_experiment_drivers.py::test_table3_results_survive_lost_run_folders',)),
    Mutation('M63', 'collect_ablation writes over tables whose runs its root lacks',
             'experiments/collect_ablation.py',
             '    lost = [] if a.replace else dropped_runs(agg, a.out)',
             '    lost = []',
             ('tests/test_collect_ablation.py::test_cli_refuses_to_drop_runs_the_output_holds',)),
    Mutation('M64', 'critic_encode_once shares an encoding of the wrong history (reversed)',
             'aos4rec_jax/ssrgan.py',
             "            enc = self.critic.apply({'params': cp}, b.history, method=self.critic.encode) if once else None",
             "            enc = self.critic.apply({'params': cp}, b.history[:, ::-1], method=self.critic.encode) if once else None",
             ('tests/test_critic_encode_once.py::test_one_encoding_computes_the_same_update',)),
    Mutation('M65', "the decoding pass draws Eq. 8's successors at temperature 1, not the lists'",
             'aos4rec_jax/decoding.py',
             '        scaled = log_probs * inv_t\n        succ_keys',
             '        scaled = log_probs\n        succ_keys',
             ('tests/test_ssrgan_sampling.py::test_successors_follow_each_steps_allowed_softmax',)),
    Mutation('M66', "successors_from_decode hands the critic the successors of the next prefix",
             'aos4rec_jax/ssrgan.py',
             '        return out.sequences[:, 0], out.successors[:, 0]',
             '        return out.sequences[:, 0], jnp.roll(out.successors[:, 0], -1, axis=1)',
             ('tests/test_ssrgan_sampling.py::test_critic_update_from_the_decoding_pass_equals_the_teacher_forced_one',)),
    Mutation('M67', "the softmax loss's own backward pass flips its sign (every full-softmax model unlearns)",
             'aos4rec_jax/softmax_xent.py',
             '    d = g.astype(jnp.float32)[..., None] * (p - onehot.astype(jnp.float32))',
             '    d = g.astype(jnp.float32)[..., None] * (onehot.astype(jnp.float32) - p)',
             ('tests/test_softmax_xent.py::test_by_hand',
              'tests/test_softmax_xent.py::test_values_and_gradients_equal_autodiff_of_log_softmax')),
    Mutation('M68', "a tied output layer's backward pass gives the item table no gradient",
             'aos4rec_jax/models/layers.py',
             '    return dx, dw_t.T.astype(w.dtype)',
             '    return dx, jnp.zeros_like(w)',
             ('tests/test_layers_tied_logits.py::test_values_and_gradients_equal_the_plain_product',)),
    Mutation('M71', "BPR-max's hand-written backward pass drops the score regulariser's own term",
             'aos4rec_jax/methods/losses.py',
             '             + reg * (jnp.square(x) - q[..., None] + 2.0 * x))',
             '             + reg * (jnp.square(x) - q[..., None]))',
             ('tests/test_methods.py::test_bpr_max_and_top1_max_gradients_equal_autodiff_over_split_negative_groups',)),
    Mutation('M72', "BPR-max's backward pass gives the positive score the negatives' sign",
             'aos4rec_jax/methods/losses.py',
             '    return -ct * c * inv, tuple(grads), None',
             '    return ct * c * inv, tuple(grads), None',
             ('tests/test_methods.py::test_bpr_max_and_top1_max_gradients_equal_autodiff_over_split_negative_groups',)),
    Mutation('M73', 'packed positions count the filler rows (index 0 of the group) as real',
             'aos4rec_jax/methods/next_item.py',
             '        keep = jnp.arange(cap)[None, :] < jnp.sum(m, axis=1, keepdims=True)',
             '        keep = jnp.arange(cap)[None, :] < cap',
             ('tests/test_pack_positions.py::test_packed_loss_and_gradient_equal_the_padded_ones',)),
    Mutation('M74', 'a batch over the cap of packed positions is packed anyway (rows dropped)',
             'aos4rec_jax/methods/next_item.py',
             '                self.fits(data, key), value_and_grad(True), value_and_grad(False), state[\'params\'])',
             '                True, value_and_grad(True), value_and_grad(False), state[\'params\'])',
             ('tests/test_pack_positions.py::test_train_steps_packed_equal_unpacked_and_over_the_cap_fall_back',)),
    Mutation('M75', "BERT4Rec's packed rows a sequence leave out cloze_mask's cap of M",
             'aos4rec_jax/methods/bert4rec.py',
             '        k = np.clip(np.round(float(self.opts.mask_prob) * n), 1, self.M)',
             '        k = np.maximum(np.round(float(self.opts.mask_prob) * n), 1)',
             ('tests/test_pack_positions.py::test_bert4rec_rows_per_sequence_are_the_cloze_counts',)),
    Mutation('M76', "the packed network's band lets a query see its row's later items",
             'aos4rec_jax/models/layers.py',
             '        same = same & (col_k[:, None, :] <= column[:, :, None])',
             '        same = same',
             ('tests/test_pack_sequences.py::test_band_mask_by_hand',
              'tests/test_pack_sequences.py::test_encode_packed_equals_encode_at_the_real_items')),
    Mutation('M77', "the packed network's chunks do not see the chunk before them",
             'aos4rec_jax/models/layers.py',
             '    parts = [jnp.concatenate([edge, g[:, :-1]], axis=1), g]',
             '    parts = [jnp.full_like(g, fill), g]',
             ('tests/test_pack_sequences.py::test_band_mask_by_hand',
              'tests/test_pack_sequences.py::test_encode_packed_equals_encode_at_the_real_items')),
    Mutation('M78', "the packed network's positions are the stream's, not the row's columns",
             'aos4rec_jax/models/sasrec.py',
             '        pos = column + (self.cfg.max_len - items.shape[1])',
             '        pos = jnp.broadcast_to(jnp.arange(items.shape[1]), items.shape)',
             ('tests/test_pack_sequences.py::test_encode_packed_equals_encode_at_the_real_items',
              'tests/test_pack_sequences.py::test_packed_network_loss_and_gradient_equal_the_padded_ones')),
    Mutation('M79', "BERT4Rec's packed chunks do not see the chunk after them",
             'aos4rec_jax/models/layers.py',
             '        parts.append(jnp.concatenate([g[:, 1:], edge], axis=1))',
             '        parts.append(jnp.full_like(g, fill))',
             ('tests/test_pack_sequences.py::test_band_mask_by_hand',
              'tests/test_pack_sequences.py::test_packed_network_loss_and_gradient_equal_the_padded_ones')),
    Mutation('M80', "BERT4Rec's packed network reads the masked slots one token early in the stream",
             'aos4rec_jax/methods/bert4rec.py',
             '        rank = jnp.cumsum(real.reshape(G, -1).astype(jnp.int32), axis=1) - 1',
             '        rank = jnp.cumsum(real.reshape(G, -1).astype(jnp.int32), axis=1) - 2',
             ('tests/test_pack_sequences.py::test_packed_network_loss_and_gradient_equal_the_padded_ones',)),
    Mutation('M81', "GCSAN's packed nodes start each row where the group starts (rows overlap)",
             'aos4rec_jax/models/gcsan.py',
             '        start = jnp.cumsum(count, axis=1) - count                         # exclusive, per group',
             '        start = jnp.zeros_like(count)',
             ('tests/test_pack_sequences.py::test_gcsan_packed_nodes_by_hand',
              'tests/test_pack_sequences.py::test_packed_network_loss_and_gradient_equal_the_padded_ones')),
    Mutation('M82', "GCSAN's packed network reads h at the first position's node, not the last's",
             'aos4rec_jax/models/gcsan.py',
             '        last = graph.base + alias[:, -1]',
             '        last = graph.base + alias[:, 0]',
             ('tests/test_pack_sequences.py::test_packed_network_loss_and_gradient_equal_the_padded_ones',)),
    Mutation('M69', 'dropout keeps the kept values unscaled (the layer shrinks its input)',
             'aos4rec_jax/models/dropout.py',
             "        scale = jnp.asarray(1.0 / keep_probability(self.rate), inputs.dtype)",
             "        scale = jnp.asarray(1.0, inputs.dtype)",
             ('tests/test_dropout.py::test_statistics_keep_rate_mean_and_independence',)),
    Mutation('M70', "dropout's four elements of a hash use only the high halves",
             'aos4rec_jax/models/dropout.py',
             '    return jnp.where(part % 2 == 0, src >> 16, src & 0xFFFF)',
             '    return src >> 16',
             ('tests/test_dropout.py::test_uniform16_is_the_halves_of_one_hash_per_four_elements',
              'tests/test_dropout.py::test_statistics_keep_rate_mean_and_independence')),
]


def tracked_files(root: str) -> list[str]:
    out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    return [p for p in out.split('\0') if p and os.path.isfile(os.path.join(root, p))]


def copy_tree(root: str, dest: str) -> None:
    for rel in tracked_files(root):
        src, dst = os.path.join(root, rel), os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def check_applies(m: Mutation, root: str = ROOT) -> str | None:
    """None if `m.old` occurs exactly once in `m.file` and the named test files exist, else why."""
    path = os.path.join(root, m.file)
    if not os.path.exists(path):
        return f'{m.id}: {m.file} does not exist'
    with open(path) as f:
        n = f.read().count(m.old)
    if n != 1:
        return f'{m.id}: {m.old!r} occurs {n} times in {m.file} (must be exactly once)'
    for t in m.tests:
        test_file, _, name = t.partition('::')
        if not os.path.exists(os.path.join(root, test_file)):
            return f'{m.id}: test file {test_file} does not exist'
        with open(os.path.join(root, test_file)) as f:
            if f'def {name.split("[")[0]}(' not in f.read():
                return f'{m.id}: {t} is not defined'
    return None


def run_one(m: Mutation, workdir: str, timeout: int) -> dict:
    dest = os.path.join(workdir, m.id)
    copy_tree(ROOT, dest)
    path = os.path.join(dest, m.file)
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(text.replace(m.old, m.new, 1))
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONDONTWRITEBYTECODE='1')
    # the copy's package must be the one imported, not the editable install of the clean tree
    env['PYTHONPATH'] = dest + os.pathsep + env.get('PYTHONPATH', '')
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider',
                            *m.tests], cwd=dest, env=env, capture_output=True, text=True,
                           timeout=timeout)
        code, tail = r.returncode, (r.stdout + r.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        code, tail = -1, f'timed out after {timeout} s'
    shutil.rmtree(dest, ignore_errors=True)
    # pytest: 1 = some test failed (killed); 0 = all passed (survived); else an error
    outcome = {0: 'survived', 1: 'killed'}.get(code, 'error')
    return dict(id=m.id, what=m.what, file=m.file, tests=list(m.tests), outcome=outcome,
                seconds=round(time.time() - t0, 1), exit_code=code,
                **({'tail': tail} if outcome != 'killed' else {}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description='Apply each hand mutation to a copy; its tests must fail.')
    ap.add_argument('--only', nargs='*', help='mutation ids (default: all)')
    ap.add_argument('--list', action='store_true', help='list the mutations and exit')
    ap.add_argument('--json', help='write the outcome here')
    ap.add_argument('--timeout', type=int, default=900, help='seconds per mutation')
    a = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not a.only or m.id in a.only]
    if a.only and len(chosen) != len(set(a.only)):
        known = {m.id for m in MUTATIONS}
        print(f'error: unknown mutation id(s): {sorted(set(a.only) - known)}', file=sys.stderr)
        return 2
    if a.list:
        for m in chosen:
            print(f'{m.id:5s} {m.file:34s} {m.what}')
        return 0
    problems = [p for p in (check_applies(m) for m in chosen) if p]
    if problems:
        print('\n'.join(f'error: {p}' for p in problems), file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix='mutation_check_') as tmp:
        for i, m in enumerate(chosen, 1):
            r = run_one(m, tmp, a.timeout)
            results.append(r)
            print(f'[{i}/{len(chosen)}] {m.id:5s} {r["outcome"]:8s} {r["seconds"]:6.1f}s  {m.what}',
                  flush=True)
            if r['outcome'] != 'killed':
                print('      ' + r['tail'].replace('\n', '\n      '), flush=True)
    if a.json:
        tmp = a.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(dict(date=time.strftime('%Y-%m-%d'), results=results), f, indent=2)
            f.write('\n')
        os.replace(tmp, a.json)
    survived = [r['id'] for r in results if r['outcome'] != 'killed']
    print(f'{len(results) - len(survived)} killed, {len(survived)} not killed'
          + (f': {", ".join(survived)}' if survived else ''))
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
