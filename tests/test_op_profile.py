"""benchmarks/op_profile.py: HLO parsing, scope and direction rules, and one real trace."""
import json
import os
import subprocess
import sys
import textwrap

from benchmarks import op_profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HLO = """HloModule jit_f, entry_computation_layout={(f32[4,4]{1,0})->f32[4,4]{1,0}}

%fused_computation (param_0: f32[4,4]) -> f32[4,4] {
  %param_0 = f32[4,4]{1,0} parameter(0)
  ROOT %sine.1 = f32[4,4]{1,0} sine(%param_0), metadata={op_name="jit(f)/jvp(mle_loss)/sin"}
}

%body (arg: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %arg = (s32[], f32[4,4]{1,0}) parameter(0)
  ROOT %tuple.1 = (s32[], f32[4,4]{1,0}) tuple(%a, %b)
}

ENTRY %main.3 (x.1: f32[4,4]) -> f32[4,4] {
  %x.1 = f32[4,4]{1,0} parameter(0), metadata={op_name="x"}
  %wrapped_sine = f32[4,4]{1,0} fusion(%x.1), kind=kLoop, calls=%fused_computation
  %dot.2 = f32[4,4]{1,0} dot(%x.1, %x.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(f)/transpose(jvp(critic_loss))/gradient_penalty/dot_general"}
  %while.5 = (s32[], f32[4,4]{1,0}) while(%t), condition=%cond, body=%body, metadata={op_name="jit(f)/while"}
  ROOT %copy.1 = f32[4,4]{1,0} copy(%dot.2)
}
"""


def test_hlo_instructions_by_hand():
    ins = op_profile.hlo_instructions(HLO)
    assert ins['dot.2'] == {'opcode': 'dot', 'op_name':
                            'jit(f)/transpose(jvp(critic_loss))/gradient_penalty/dot_general'}
    # a fusion without metadata takes the op_name found in the computation it calls
    assert ins['wrapped_sine'] == {'opcode': 'fusion:kLoop', 'op_name': 'jit(f)/jvp(mle_loss)/sin'}
    assert ins['while.5']['opcode'] == 'while'
    assert ins['tuple.1']['opcode'] == 'tuple'          # a tuple-typed result
    assert ins['copy.1'] == {'opcode': 'copy', 'op_name': ''}
    assert 'main.3' not in ins and 'fused_computation' not in ins


def test_scope_and_direction():
    name = 'jit(f)/transpose(jvp(critic_loss))/gradient_penalty/dot_general'
    assert op_profile.scope_of(name) == 'gradient_penalty'          # the innermost scope
    assert op_profile.direction_of(name) == 'backward'
    assert op_profile.scope_of('jit(f)/jvp(critic_loss)/backbone/add') == 'critic_loss'
    assert op_profile.direction_of('jit(f)/jvp(critic_loss)/backbone/add') == 'forward'
    assert op_profile.scope_of('jit(f)/add') == 'other'
    assert op_profile.scope_of('') == 'other'


def test_profile_of_a_real_trace(tmp_path):
    """A fresh process (the CPU flag must be set before the backend starts): a scan of matmuls
    under a named scope, differentiated; the sums are per call and the loop is not counted."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {ROOT!r})
        from benchmarks import op_profile
        op_profile.enable()
        import jax, jax.numpy as jnp

        def loss(w, x):
            with jax.named_scope('mle_loss'):
                y = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=4)[0]
                return jnp.sum(y ** 2)

        step = jax.jit(jax.grad(loss))
        w, x = jnp.eye(256) * 0.5, jnp.ones((512, 256))
        jax.block_until_ready(step(w, x))
        text = step.lower(w, x).compile().as_text()
        r = op_profile.profile(lambda: jax.block_until_ready(step(w, x)), text, calls=3, top=50)
        r['names'] = sorted(op_profile.hlo_instructions(text))
        print(json.dumps(r))
    """)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r['calls'] == 3 and r['op_ms_per_call'] > 0 and r['wall_ms_per_call'] > 0
    assert r['trace_dir'] is None                        # a temporary trace, removed
    scope = r['by_scope']['mle_loss']
    assert scope['forward'] > 0 and scope['backward'] > 0
    assert abs(sum(v['share'] for v in r['by_scope'].values()) - 1.0) < 1e-9
    assert abs(sum(o['share'] for o in r['top_ops']) - 1.0) < 1e-9     # top 50 = all of them
    for o in r['top_ops']:
        assert o['name'] in r['names']
        assert o['opcode'] not in op_profile.CONTROL_FLOW
    assert any(o['opcode'] in ('dot', 'fusion:kCustom', 'fusion:kOutput') for o in r['top_ops'])


def test_generation_case_profiles_the_decode_loop(tmp_path):
    """`--cases beam`: the suite's generation jit at the tiny size, profiled in a fresh process;
    the decode steps' operations are attributed to decode_step, the search's to 'other'."""
    out_json = tmp_path / 'beam.json'
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    env.pop('XLA_FLAGS', None)
    out = subprocess.run([sys.executable, '-m', 'benchmarks.op_profile', '--out', str(out_json),
                          '--cases', 'beam', '--models', 'transformer', '--gen-size', 'tiny',
                          '--calls', '1', '--top', '5'],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out_json.read_text())['results']['transformer']['beam']
    assert r['calls'] == 1 and r['op_ms_per_call'] > 0
    assert r['by_scope']['decode_step']['forward'] > 0
    assert r['by_scope']['init_decode_state']['forward'] > 0
    assert r['by_scope']['decode_step']['backward'] == 0         # generation: no autodiff
    assert len(r['top_ops']) == 5
