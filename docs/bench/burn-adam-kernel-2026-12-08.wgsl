// burn 0.22.1's Adam step on Linear(4096, 4096) as cubecl 0.11.3 generated it on lavapipe
// (CUBECL_DEBUG_LOG=stdout BAYESPROP_BENCH_MODEL=large BAYESPROP_BENCH_OPTIMIZER=adam
// BAYESPROP_BENCH_PATH=module BAYESPROP_BENCH_POLICY=propagate cargo bench -p bayesprop-burn),
// 2026-12-08: the elementwise fusion of one step, steps synchronised one by one.
@group(0) @binding(3) var<storage, read_write> v19: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v13: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> v7: array<vec4<f32>>;
@group(0) @binding(0) var<storage, read_write> v1: array<vec4<f32>>;
struct info_st { scalars_usize: array<u32, 14>, scalars_f32: array<f32, 8>, static_meta: array<u32, 12>, dynamic_meta: array<u32> }
@group(0) @binding(4) var<storage, read> info_var: info_st;
@compute @workgroup_size(8, 8, 1)
fn elemwise_fuse_960c97a0(@builtin(workgroup_id) v177: vec3<u32>, @builtin(num_workgroups) v179: vec3<u32>, @builtin(local_invocation_index) v186: u32) {
let v195 = &v19;
let v196 = &v13;
let v197 = &v7;
let v198 = &v1;
let v5 = u32(0);
let v25 = info_var.scalars_f32[0];
let v26 = info_var.scalars_f32[1];
let v27 = info_var.scalars_f32[2];
let v28 = info_var.scalars_f32[3];
let v29 = info_var.scalars_f32[4];
let v30 = info_var.scalars_f32[5];
let v31 = info_var.scalars_f32[6];
let v32 = info_var.scalars_usize[8];
let v178 = v177[2];
let v155 = u32(v178);
let v180 = v179[1];
let v157 = u32(v180);
let v158 = v155 * v157;
let v181 = v179[0];
let v160 = u32(v181);
let v161 = v158 * v160;
let v182 = v177[1];
let v163 = u32(v182);
let v166 = v163 * v160;
let v167 = v161 + v166;
let v184 = v177[0];
let v169 = u32(v184);
let v170 = v167 + v169;
let v190 = u32(64);
let v173 = v170 * v190;
let v187 = v186;
let v175 = u32(v187);
let v176 = v173 + v175;
// Init locals begin
var<function> v146_store: array<u32, 1>= array<u32, 1>();
let v146 = &v146_store;
let v50 = u32(1);
var<function> v147_store: array<u32, 1>= array<u32, 1>();
let v147 = &v147_store;
let v148 = info_var.static_meta[4];
let v150 = info_var.dynamic_meta[v148];
let v151 = info_var.static_meta[8];
let v153 = info_var.dynamic_meta[v151];
let v66 = &(*v146)[v5];
*v66 = v150;
let v68 = v150 == v50;
let v70 = max(v153, v50);
let v71 = select(v153, v70, v68);
let v76 = &(*v147)[v5];
*v76 = v71;
// Init locals end
let v78 = v176 < v32;
if v78 {
// Fuse on write begin
let v83 = &(*v198)[v176];
let v84 = *v83;
let v89 = &(*v197)[v176];
let v90 = *v89;
let v95 = &(*v196)[v176];
let v96 = *v95;
let v101 = &(*v195)[v176];
let v102 = *v101;
let v103 = vec4<f32>(v25);
let v105 = vec4<f32>(v26);
let v106 = v90 * v105;
let v191 = fma(v84, v103, v106);
let v108 = v90 * v90;
let v109 = vec4<f32>(v27);
let v110 = v108 * v109;
let v111 = vec4<f32>(v28);
let v192 = fma(v96, v111, v110);
let v114 = vec4<f32>(v29);
let v115 = v191 * v114;
let v116 = sqrt(v192);
let v117 = vec4<f32>(v30);
let v118 = v116 + v117;
let v119 = v115 / v118;
let v120 = vec4<f32>(v31);
let v193 = -v119;
let v194 = fma(v193, v120, v102);
*v83 = v191;
*v95 = v192;
*v101 = v194;
// Fuse on write end

}
return;

}

