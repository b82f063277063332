/* Tests of infer/ model files: SHA-256 against the FIPS 180-4 examples; the safetensors rules
 * of mmunet.md 4.3 with the messages tools/mmunet/export.py gives (tables generated from it);
 * the card checks; F16/BF16 conversion and unaligned data; the fixtures and the demo model. */
#include <cjson/cJSON.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/sha256.h"
#include "infer/infer.h"
#include "infer/model-impl.h"
#include "tests/tap.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *srcdir = ".";
static char tmpdir[] = "/tmp/test-model.XXXXXX";
static char why[4096];

/* ----------------------------------------------------------------------------- tables */
/* A header (and data) written to a file and loaded; want is the message after "PATH: ". */
struct header_case {
    const char *desc, *header;
    size_t header_len;
    const char *data;
    size_t data_len;
    const char *want;
};

/* Generated with parse_safetensors()/read_model() of tools/mmunet/export.py. Where Python
 * checks values after the card, the C loader checks them at once: those four rows say so. */
static const struct header_case header_cases[] = {
    {"empty header", "", 0, "", 0, "header does not start with '{'"},
    {"header of spaces", "    ", 4, "", 0, "header does not start with '{'"},
    {"header starting with a space", " {}", 3, "", 0, "header does not start with '{'"},
    {"header is an array", "[]", 2, "", 0, "header does not start with '{'"},
    {"text after the object", "{} x", 4, "", 0,
     "header has text after its JSON object other than spaces"},
    {"newline after the object", "{}\012", 3, "", 0,
     "header has text after its JSON object other than spaces"},
    {"a second object", "{}{}", 4, "", 0,
     "header has text after its JSON object other than spaces"},
    {"expecting value", "{\"a\":}", 6, "", 0, "header is not JSON (Expecting value at 5)"},
    {"trailing comma in an object", "{\"a\":1,}", 8, "", 0,
     "header is not JSON (Expecting property name enclosed in double quotes at 7)"},
    {"trailing comma in an array", "{\"a\":[1,]}", 10, "", 0,
     "header is not JSON (Expecting value at 8)"},
    {"missing colon", "{\"a\" 1}", 7, "", 0, "header is not JSON (Expecting ':' delimiter at 5)"},
    {"missing comma", "{\"a\":1 \"b\":2}", 13, "", 0,
     "header is not JSON (Expecting ',' delimiter at 7)"},
    {"unquoted key", "{a:1}", 5, "", 0,
     "header is not JSON (Expecting property name enclosed in double quotes at 1)"},
    {"single-quoted string", "{'a':1}", 7, "", 0,
     "header is not JSON (Expecting property name enclosed in double quotes at 1)"},
    {"control character in a string", "{\"a\":\"\001\"}", 9, "", 0,
     "header is not JSON (Invalid control character at at 6)"},
    {"invalid escape", "{\"a\":\"\\q\"}", 10, "", 0, "header is not JSON (Invalid \\escape at 6)"},
    {"short \\u escape", "{\"a\":\"\\u12\"}", 12, "", 0,
     "header is not JSON (Invalid \\uXXXX escape at 7)"},
    {"bad hex in \\u escape", "{\"a\":\"\\u12G4\"}", 14, "", 0,
     "header is not JSON (Invalid \\uXXXX escape at 7)"},
    {"unterminated string", "{\"a\":\"abc", 9, "", 0,
     "header is not JSON (Unterminated string starting at at 5)"},
    {"unterminated object", "{\"a\":1", 6, "", 0,
     "header is not JSON (Expecting ',' delimiter at 6)"},
    {"leading zero", "{\"a\":01}", 8, "", 0, "header is not JSON (Expecting ',' delimiter at 6)"},
    {"plus sign", "{\"a\":+1}", 8, "", 0, "header is not JSON (Expecting value at 5)"},
    {"bare fraction", "{\"a\":.5}", 8, "", 0, "header is not JSON (Expecting value at 5)"},
    {"fraction without digits", "{\"a\":1.}", 8, "", 0,
     "header is not JSON (Expecting ',' delimiter at 6)"},
    {"exponent without digits", "{\"a\":1e}", 8, "", 0,
     "header is not JSON (Expecting ',' delimiter at 6)"},
    {"unclosed array", "{\"a\":[1,2}", 10, "", 0,
     "header is not JSON (Expecting ',' delimiter at 9)"},
    {"capitalised literal", "{\"a\":True}", 10, "", 0, "header is not JSON (Expecting value at 5)"},
    {"tab and CR are whitespace", "{\011\"__metadata__\"\015:\012{}\011}", 23, "", 0,
     "no model card (__metadata__ key 'mmsegd.model')"},
    {"two-line position", "{\012\"a\":\012}", 8, "", 0,
     "header is not JSON (Expecting value at 7)"},
    {"non-ASCII before the error", "{\"\303\251\303\251\":}", 9, "", 0,
     "header is not JSON (Expecting value at 6)"},
    {"duplicate tensor", "{\"a\":1,\"a\":2}", 13, "", 0, "header: duplicate key 'a'"},
    {"duplicate key inside an entry", "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", 35, "", 0,
     "header: duplicate key 'dtype'"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 34, "", 0,
     "header: duplicate key 'k'"},
    {"duplicate key, escaped spelling", "{\"__metadata__\":{\"k\":\"1\",\"\\u006b\":\"2\"}}", 39,
     "", 0, "header: duplicate key 'k'"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 24, "", 0,
     "__metadata__ must map strings to strings"},
    {"metadata not an object", "{\"__metadata__\":[]}", 19, "", 0,
     "__metadata__ must map strings to strings"},
    {"metadata NaN literal", "{\"__metadata__\":{\"k\":NaN}}", 26, "", 0,
     "__metadata__ must map strings to strings"},
    {"entry without data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 33, "", 0,
     "tensor 't': entry needs exactly dtype, shape, data_offsets"},
    {"entry with an extra key",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 60,
     "\000\000\300?", 4, "tensor 't': entry needs exactly dtype, shape, data_offsets"},
    {"entry not an object", "{\"t\":[1]}", 9, "", 0,
     "tensor 't': entry needs exactly dtype, shape, data_offsets"},
    {"dtype F64", "{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 54,
     "\000\000\000\000\000\000\000\000", 8, "tensor 't': dtype F64 is not F32, F16 or BF16"},
    {"dtype a number", "{\"t\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 50,
     "\000\000\300?", 4, "tensor 't': dtype 5 is not F32, F16 or BF16"},
    {"dtype null", "{\"t\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,4]}}", 53,
     "\000\000\300?", 4, "tensor 't': dtype None is not F32, F16 or BF16"},
    {"float dimension", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 56,
     "\000\000\300?", 4, "tensor 't': bad shape [1.0] (rank <= 5, dims >= 0)"},
    {"negative dimension", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 55,
     "\000\000\300?", 4, "tensor 't': bad shape [-1] (rank <= 5, dims >= 0)"},
    {"rank 6", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 64,
     "\000\000\300?", 4, "tensor 't': bad shape [1, 1, 1, 1, 1, 1] (rank <= 5, dims >= 0)"},
    {"shape not a list", "{\"t\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 54,
     "\000\000\300?", 4, "tensor 't': bad shape \"1\" (rank <= 5, dims >= 0)"},
    {"boolean dimension", "{\"t\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", 57,
     "\000\000\300?", 4, "tensor 't': bad shape [true] (rank <= 5, dims >= 0)"},
    {"count overflow",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,4]}}", 74,
     "\000\000\300?", 4, "tensor 't': element count overflows"},
    {"count just below 2^62",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483647],\"data_offsets\":[0,4]}}", 74,
     "\000\000\300?", 4, "tensor 't': 4 bytes for 4611686016279904256 F32 elements"},
    {"zero dimension stops the product",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904],\"data_offsets\":[0,0]}}", 74, "",
     0, "no model card (__metadata__ key 'mmsegd.model')"},
    {"one offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 52,
     "\000\000\300?", 4, "tensor 't': data_offsets must be two integers"},
    {"float offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 56,
     "\000\000\300?", 4, "tensor 't': data_offsets must be two integers"},
    {"negative offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 55,
     "\000\000\300?", 4, "tensor 't': offsets [-4, 0] outside the data (4 bytes)"},
    {"reversed offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 54,
     "\000\000\300?", 4, "tensor 't': offsets [4, 0] outside the data (4 bytes)"},
    {"offsets past the data", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}",
     54, "\000\000\300?", 4, "tensor 't': offsets [0, 8] outside the data (4 bytes)"},
    {"huge offset",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 73,
     "\000\000\300?", 4,
     "tensor 't': offsets [0, 18446744073709551616] outside the data (4 bytes)"},
    {"size mismatch", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 54,
     "\000\000\300?", 4, "tensor 't': 4 bytes for 2 F32 elements"},
    {"F16 size mismatch", "{\"t\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 54,
     "\000\000\300?", 4, "tensor 't': 4 bytes for 1 F16 elements"},
    {"hole at the start", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 54,
     "\000\000\000\000\000\000\000\000", 8, "tensor 't': data at 4, expected 0 (hole)"},
    {"data left over", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 54,
     "\000\000\000\000\000\000\000\000", 8, "tensors end at 4, the data is 8 bytes"},
    {"overlap of two tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[4,8]}}",
     107, "\000\000\000\000\000\000\000\000", 8, "tensor 'b': data at 4, expected 8 (overlap)"},
    {"the same range twice",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[0,4]}}",
     107, "\000\000\000\000", 4, "tensor 'b': data at 0, expected 4 (overlap)"},
    {"F32 NaN", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 54,
     "\000\000\300\177", 4, "tensor 't': NaN or infinite value"},
    {"F32 infinity", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 54,
     "\000\000\200\377", 4, "tensor 't': NaN or infinite value"},
    {"F16 infinity", "{\"t\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 54,
     "\000<\000|", 4, "tensor 't': NaN or infinite value"},
    {"BF16 NaN", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 55,
     "\200?\300\177", 4, "tensor 't': NaN or infinite value"},
    {"valid file without a card",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 54, "\000\000\300?", 4,
     "no model card (__metadata__ key 'mmsegd.model')"},
    {"name with a quote", "{\"it's\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 57,
     "\000\000\300?", 4, "tensor \"it's\": offsets [0, 8] outside the data (4 bytes)"},
    {"surrogate pair in a metadata value", "{\"__metadata__\":{\"k\":\"\\ud83d\\ude00\"}}", 37, "",
     0, "no model card (__metadata__ key 'mmsegd.model')"},
    {"empty tensor list", "{}", 2, "", 0, "no model card (__metadata__ key 'mmsegd.model')"},
    {"zero-size tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"b\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[0,4]},\"c\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_"
     "offsets\":[4,4]}}",
     162, "\000\000\300?", 4, "no model card (__metadata__ key 'mmsegd.model')"},
    {"tensors in any order",
     "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"a\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[0,4]}}",
     107, "\000\000\300?\000\000\300?", 8, "no model card (__metadata__ key 'mmsegd.model')"},
};

/* An edit of micro.safetensors' card: the value at a dotted path replaced by raw JSON text
 * (NULL: the key or element removed); want is validate_card()'s message, "" if valid. */
struct card_case {
    const char *path, *raw, *want;
};

static const struct card_case card_cases[] = {
    {"schema", "\"mmsegd.model/2\"", "schema: expected 'mmsegd.model/1', found 'mmsegd.model/2'"},
    {"schema", NULL, "schema: expected 'mmsegd.model/1', found None"},
    {"name", "\"\"", "name: expected a non-empty string"},
    {"license", "5", "license: expected a non-empty string"},
    {"architecture.attention", "true",
     "architecture: unknown key 'attention' (it could change the math)"},
    {"architecture.decoder", NULL, "architecture: missing key 'decoder'"},
    {"architecture.family", "\"unet\"",
     "architecture.family: expected 'mmunet', 'PlainConvUNet' or 'ResidualEncoderUNet', found "
     "'unet'"},
    {"architecture.n_stages", "9", "architecture.n_stages: must be 2..8, found 9"},
    {"architecture.n_stages", "2.0", "architecture.n_stages: must be 2..8, found 2.0"},
    {"architecture.in_channels", "0", "architecture.in_channels: must be >= 1"},
    {"architecture.num_classes", "true", "architecture.num_classes: must be >= 2"},
    {"architecture.features_per_stage", "[2, 0]",
     "architecture.features_per_stage: values must lie in 1..None, found [2, 0]"},
    {"architecture.features_per_stage", "[2]",
     "architecture.features_per_stage: expected 2 integers, found [2]"},
    {"architecture.features_per_stage", "[2, 4.0]",
     "architecture.features_per_stage: expected 2 integers, found [2, 4.0]"},
    {"architecture.kernel_sizes", "[[1,3,3]]", "architecture.kernel_sizes: expected 2 entries"},
    {"architecture.kernel_sizes.1", "[3,3,9]",
     "architecture.kernel_sizes[1]: values must lie in 1..7, found [3, 3, 9]"},
    {"architecture.kernel_sizes.1", "[3,2,3]",
     "architecture.kernel_sizes[1]: kernels must be odd, found [3, 2, 3]"},
    {"architecture.strides.0", "[1,2,1]",
     "architecture.strides[0]: must be [1, 1, 1], found [1, 2, 1]"},
    {"architecture.strides.1", "[0,2,2]",
     "architecture.strides[1]: values must lie in 1..None, found [0, 2, 2]"},
    {"architecture.n_blocks_decoder", "[1, 1]",
     "architecture.n_blocks_decoder: expected 1 integers, found [1, 1]"},
    {"architecture.stem_blocks", "0", "architecture.stem_blocks: must be >= 1"},
    {"architecture.ensemble", "[\"fold_0\", \"fold_1\"]", ""},
    {"architecture.ensemble", "[\"a\"]",
     "architecture.ensemble: 2 to 16 distinct member names (1 to 64 letters, digits, '_', '.', "
     "'-'), found [\"a\"]"},
    {"architecture.ensemble", "[\"a\", 1]",
     "architecture.ensemble: 2 to 16 distinct member names (1 to 64 letters, digits, '_', '.', "
     "'-'), found [\"a\", 1]"},
    {"postprocessing", "[]", ""},
    {"postprocessing", "[{\"keep_largest_component\": [2, 1]}, {\"keep_largest_component\": [2]}]",
     ""},
    {"postprocessing", "{}", "postprocessing: a list of steps is required, found {}"},
    {"postprocessing", "[{\"keep_largest_component\": [3]}]",
     "postprocessing[0]: expected {\"keep_largest_component\": [distinct label ids in 1..2]}, "
     "found {\"keep_largest_component\": [3]}"},
    {"postprocessing", "[{\"keep_largest_component\": [1]}, {\"keep_largest_component\": [1, 1]}]",
     "postprocessing[1]: expected {\"keep_largest_component\": [distinct label ids in 1..2]}, "
     "found {\"keep_largest_component\": [1, 1]}"},
    {"postprocessing", "[{\"keep_largest_component\": []}]",
     "postprocessing[0]: expected {\"keep_largest_component\": [distinct label ids in 1..2]}, "
     "found {\"keep_largest_component\": []}"},
    {"postprocessing", "[{\"keep_largest_component\": [1], \"size\": 3}]",
     "postprocessing[0]: expected {\"keep_largest_component\": [distinct label ids in 1..2]}, "
     "found {\"keep_largest_component\": [1], \"size\": 3}"},
    {"architecture.norm.eps", "1e-6",
     "architecture.norm: version 1 accepts only instance, eps 1e-5, affine true; found {\"type\": "
     "\"instance\", \"eps\": 1e-06, \"affine\": true}"},
    {"architecture.norm.affine", "1", ""},
    {"architecture.norm.extra", "1",
     "architecture.norm: version 1 accepts only instance, eps 1e-5, affine true; found {\"type\": "
     "\"instance\", \"eps\": 1e-05, \"affine\": true, \"extra\": 1}"},
    {"architecture.nonlin.negative_slope", "0.02",
     "architecture.nonlin: version 1 accepts only leaky_relu 0.01; found {\"type\": "
     "\"leaky_relu\", \"negative_slope\": 0.02}"},
    {"architecture.decoder", "\"plain\"",
     "architecture.decoder: version 1 accepts only 'residual_nearest'"},
    {"architecture.mixer.chunk", "4",
     "architecture.mixer: unknown key 'chunk' (it could change the math)"},
    {"architecture.mixer.d_conv", NULL, "architecture.mixer: missing key 'd_conv'"},
    {"architecture.mixer.type", "\"mamba2\"", "architecture.mixer.type: expected 'bimamba'"},
    {"architecture.mixer.biscan", "\"both\"", "architecture.mixer.biscan: unknown 'both'"},
    {"architecture.mixer.biscan", "[\"shared\"]", "architecture.mixer.biscan: unknown ['shared']"},
    {"architecture.mixer.merge_scale", "0",
     "architecture.mixer.merge_scale: must be a positive number"},
    {"architecture.mixer.merge_scale", "NaN",
     "architecture.mixer.merge_scale: must be a positive number"},
    {"architecture.mixer.inner_residual", "0",
     "architecture.mixer.inner_residual: must be true or false"},
    {"architecture.mixer.mamba_stages", "[1, 1]",
     "architecture.mixer.mamba_stages: distinct stage indices in 0..1, found [1, 1]"},
    {"architecture.mixer.mamba_stages", "[2]",
     "architecture.mixer.mamba_stages: distinct stage indices in 0..1, found [2]"},
    {"architecture.mixer.mamba_stages", "[true]",
     "architecture.mixer.mamba_stages: distinct stage indices in 0..1, found [true]"},
    {"architecture.mixer.mamba_blocks", "\"first\"",
     "architecture.mixer.mamba_blocks: 'all' or 'last'"},
    {"architecture.mixer.ln_eps", "-1", "architecture.mixer.ln_eps: must be positive"},
    {"architecture.mixer.d_state", "0", "architecture.mixer.d_state: must be an integer >= 1"},
    {"architecture.mixer.expand", "1.5", "architecture.mixer.expand: must be an integer >= 1"},
    {"architecture.mixer.dt_rank", "\"fixed\"",
     "architecture.mixer.dt_rank: 'auto' or an integer >= 1"},
    {"architecture.mixer.dt_rank", "0", "architecture.mixer.dt_rank: 'auto' or an integer >= 1"},
    {"architecture.ignorable_tensors", "[\"a\", 1]",
     "architecture.ignorable_tensors: a list of globs"},
    {"preprocessing", "[]", "preprocessing: not an object"},
    {"preprocessing.resampling", NULL, "preprocessing: missing key 'resampling'"},
    {"preprocessing.orientation", "\"RAI\"",
     "preprocessing.orientation: 'RAS' or 'LPS', found 'RAI'"},
    {"preprocessing.transpose_forward", "[0, 1, 3]",
     "preprocessing.transpose_forward: values must lie in 0..2, found [0, 1, 3]"},
    {"preprocessing.transpose_forward", "[1, 0, 2]",
     "preprocessing.transpose_backward: [0, 1, 2] is not the inverse of the permutation [1, 0, 2]"},
    {"preprocessing.transpose_forward", "[0, 0, 2]",
     "preprocessing.transpose_backward: [0, 1, 2] is not the inverse of the permutation [0, 0, 2]"},
    {"preprocessing.target_spacing", "[3.0, 0, 1.5]",
     "preprocessing.target_spacing: 3 positive numbers, found [3.0, 0, 1.5]"},
    {"preprocessing.crop_to_nonzero", "1", "preprocessing.crop_to_nonzero: true or false"},
    {"preprocessing.normalization.scheme", "\"mr\"",
     "preprocessing.normalization.scheme: version 1 accepts only 'ct'"},
    {"preprocessing.normalization.mean", "\"0\"",
     "preprocessing.normalization.mean: a number is required"},
    {"preprocessing.normalization.clip_low", "1000",
     "preprocessing.normalization: clip_low must be below clip_high"},
    {"preprocessing.normalization.std", "0", "preprocessing.normalization.std: must be positive"},
    {"preprocessing.resampling", "1", "preprocessing.resampling: not an object"},
    {"preprocessing.resampling.data_order", "2",
     "preprocessing.resampling.data_order: one of (0, 1, 3), found 2"},
    {"preprocessing.resampling.logits_order", NULL,
     "preprocessing.resampling.logits_order: one of (0, 1, 3), found None"},
    {"preprocessing.resampling.anisotropy_threshold", "1",
     "preprocessing.resampling.anisotropy_threshold: a number above 1"},
    {"preprocessing.resampling.force_separate_z", "\"no\"",
     "preprocessing.resampling.force_separate_z: null, true or false"},
    {"inference", "5", "inference: not an object"},
    {"inference.patch_size", NULL, "inference.patch_size: expected 3 integers, found null"},
    {"inference.patch_size", "[8, 16, 0]",
     "inference.patch_size: values must lie in 1..None, found [8, 16, 0]"},
    {"inference.patch_size", "[8, 15, 16]",
     "inference.patch_size: axis 1 (15) is not divisible by the product of the strides (2)"},
    {"inference.tile_step", "1.5", "inference.tile_step: must be in (0, 1]"},
    {"inference.mirror_axes", "[0, 3]",
     "inference.mirror_axes: distinct axes from 0, 1, 2, found [0, 3]"},
    {"inference.mirror_axes", "[0, 0]",
     "inference.mirror_axes: distinct axes from 0, 1, 2, found [0, 0]"},
    {"inference.gaussian.peak", "0",
     "inference.gaussian: positive sigma_scale and peak are required"},
    {"inference.pad_value", "null", "inference.pad_value: a number is required"},
    {"labels", "{}", "labels: a list is required"},
    {"labels.0", "1", "labels[0]: not an object"},
    {"labels.0.rgb", NULL, "labels[0]: missing key 'rgb'"},
    {"labels.0.id", "\"1\"", "labels[0].id: an integer is required"},
    {"labels.0.name", "\"\"", "labels[0].name: a non-empty string is required"},
    {"labels.0.category", "{\"scheme\": \"SCT\", \"code\": \"1\"}",
     "labels[0].category: expected {scheme, code, meaning} strings, found {\"scheme\": \"SCT\", "
     "\"code\": \"1\"}"},
    {"labels.0.type.meaning", "\"\"",
     "labels[0].type: expected {scheme, code, meaning} strings, found {\"scheme\": \"SCT\", "
     "\"code\": \"10200004\", \"meaning\": \"\"}"},
    {"labels.0.modifier",
     "{\"scheme\": \"SCT\", \"code\": \"1\", \"meaning\": \"Left\", \"x\": \"y\"}",
     "labels[0].modifier: expected {scheme, code, meaning} strings, found {\"scheme\": \"SCT\", "
     "\"code\": \"1\", \"meaning\": \"Left\", \"x\": \"y\"}"},
    {"labels.0.rgb", "[0, 0, 256]", "labels[0].rgb: values must lie in 0..255, found [0, 0, 256]"},
    {"labels.0.by_patient_sex", "{\"X\": {}}",
     "labels[0].by_patient_sex: an object with keys among M, F, O"},
    {"labels.0.by_patient_sex", "{\"F\": {\"colour\": 1}}",
     "labels[0].by_patient_sex.F: unknown key 'colour'"},
    {"labels.0.by_patient_sex", "{\"F\": {\"type\": {\"scheme\": \"SCT\"}}}",
     "labels[0].by_patient_sex.F.type: expected {scheme, code, meaning} strings, found "
     "{\"scheme\": \"SCT\"}"},
    {"labels.0.by_patient_sex", "{\"M\": {\"rgb\": [1, 2]}}",
     "labels[0].by_patient_sex.M.rgb: expected 3 integers, found [1, 2]"},
    {"labels.0.id", "2",
     "labels: ids must be 1..2 once each (num_classes - 1 labels), found [2, 2]"},
    {"labels.1.id", "3",
     "labels: ids must be 1..2 once each (num_classes - 1 labels), found [1, 3]"},
    {"labels.1", NULL, "labels: ids must be 1..2 once each (num_classes - 1 labels), found [1]"},
    {"provenance", "{\"trainer\": \"x\"}", "provenance: 'trainer' and 'date' strings are required"},
    {"provenance.date", "20260131", "provenance: 'trainer' and 'date' strings are required"},
    {"architecture.norm.affine", "1.0", ""},
    {"preprocessing.resampling.data_order", "true", ""},
    {"preprocessing.resampling.data_order", "1.0", ""},
    {"preprocessing.resampling.force_separate_z", "0", ""},
    {"preprocessing.resampling.force_separate_z", NULL, ""},
    {"provenance.metrics", "{\"dice\": NaN}", ""},
    {"extra_top", "1", ""},
    {"labels.0.modifier", "{\"scheme\": \"SCT\", \"code\": \"7771000\", \"meaning\": \"Left\"}",
     ""},
    {"labels.0.by_patient_sex", "{\"F\": {\"segment_label\": \"Ovary\", \"rgb\": [1, 2, 3]}}", ""},
    /* text the SEG carries must fit its VR (a backslash once failed every SEG of the model) */
    {"labels.0.segment_label", "\"Liver\\\\left\"",
     "labels[0].segment_label: LO text is required (1 to 64 printable ASCII characters, not only "
     "spaces, no backslash), found \"Liver\\\\left\""},
    {"labels.0.type.code", "\"12345678901234567\"",
     "labels[0].type.code: SH text is required (1 to 16 printable ASCII characters, not only "
     "spaces, no backslash), found \"12345678901234567\""},
    {"labels.0.category.scheme", "\"SCT\\u0007\"",
     "labels[0].category.scheme: SH text is required (1 to 16 printable ASCII characters, not only "
     "spaces, no backslash), found \"SCT\\u0007\""},
    {"labels.0.modifier",
     "{\"scheme\": \"SCT\", \"code\": \"24028007\", \"meaning\": "
     "\"RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR\"}",
     "labels[0].modifier.meaning: LO text is required (1 to 64 printable ASCII characters, not "
     "only spaces, no backslash), found "
     "\"RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR\""},
    {"name", "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\"",
     "name: LO text is required (1 to 56 printable ASCII characters, not only spaces, no "
     "backslash), found \"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\""},
    {"version", "\"1.0\\n\"",
     "version: LO text is required (1 to 64 printable ASCII characters, not only spaces, no "
     "backslash), found \"1.0\\n\""},
    {"labels.0.by_patient_sex", "{\"F\": {\"segment_label\": \"a\\tb\"}}",
     "labels[0].by_patient_sex.F.segment_label: LO text is required (1 to 64 printable ASCII "
     "characters, not only spaces, no backslash), found \"a\\tb\""},
    {"labels.0.segment_label",
     "\"Abdominal wall muscle, left side, upper part (segment 12345678)\"", ""},
    {"labels.0.segment_label", "\"Ünterlappen\"",
     "labels[0].segment_label: LO text is required (1 to 64 printable ASCII characters, not only "
     "spaces, no backslash), found \"\\u00dcnterlappen\""},
    {"labels.0.type.meaning", "\"  \"",
     "labels[0].type.meaning: LO text is required (1 to 64 printable ASCII characters, not only "
     "spaces, no backslash), found \"  \""},
    {"name", "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\"", ""},
};

/* Card texts that are not valid cards as a whole (json.loads() and validate_card()). The one
 * deviation: Python names a repeated card key "header: duplicate key"; here it is the card. */
static const struct {
    const char *text, *want;
} card_texts[] = {
    {"", "model card is not valid JSON (Expecting value: line 1 column 1 (char 0))"},
    {"{", "model card is not valid JSON (Expecting property name enclosed in double quotes: "
          "line 1 column 2 (char 1))"},
    {"[]", "card: not a JSON object"},
    {"5", "card: not a JSON object"},
    {"{\"a\":1} x", "model card is not valid JSON (Extra data: line 1 column 9 (char 8))"},
    {"{\"a\":1,\"a\":2}", "model card is not valid JSON (duplicate key 'a')"},
    {"\xef\xbb\xbf{}", "model card is not valid JSON (Unexpected UTF-8 BOM (decode using "
                       "utf-8-sig): line 1 column 1 (char 0))"},
    {" \n {\"a\":\n  }",
     "model card is not valid JSON (Expecting value: line 3 column 3 (char 11))"},
    {"{\"a\":\"\xc3\xa9\xc3\xa9\" \"b\"}",
     "model card is not valid JSON (Expecting ',' delimiter: line 1 column 11 (char 10))"},
    {"{\"schema\": \"mmsegd.model/1\"}  \n ", "card: missing key 'name'"},
};

/* The fixtures, with the values tools/mmunet/export.py info prints for them. */
struct fixture {
    const char *file;
    int n_stages, f0;
    enum mms_biscan biscan;
    bool inner_residual, last_only;
    float merge_scale;
    uint32_t mamba_stages;
    int tensors;
    int64_t params;
    const char *sha256;
    int members; /* of a fold ensemble; 0: a single network */
    /* nnU-Net's networks: the family and features_per_stage (mmunet: f0 << s) */
    enum mms_family family;
    int features[3];
};

static const struct fixture fixtures[] = {
    {"tiny-separate.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     1.0f,
     7,
     204,
     41995,
     "711a8366ca656bfcbdb00ca13516dc26649399ebbf56c0c312a6d186c92608e7",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-shared.safetensors",
     3,
     4,
     MMS_BISCAN_SHARED,
     false,
     false,
     1.0f,
     7,
     159,
     34939,
     "e13123166781a2017ac64070c41fbc9ac3962939118e1252c10facb91441aa66",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-vim_v2.safetensors",
     3,
     4,
     MMS_BISCAN_VIM_V2,
     false,
     false,
     1.0f,
     7,
     194,
     39499,
     "d882970bdb1ae339c2c45605adeede2b58388187e9e7774e0cf55f8c9525dbe4",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-inner_residual.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     true,
     false,
     1.0f,
     7,
     204,
     41995,
     "a491a9421006a5f6242dcbce3eee907c0001cf1c59283f0c519c96dc9048578d",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-merge_half.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     0.5f,
     7,
     204,
     41995,
     "2080697564bda147ace583ab2240972bcbe2ec52f85d4f418d229bf73ce46f13",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-partial.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     false,
     true,
     1.0f,
     6,
     144,
     37163,
     "117f56e70002c784636f62cc42a68e7a971db69013dc649ec97c0d1e85920e88",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"micro.safetensors",
     2,
     2,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     1.0f,
     2,
     86,
     1511,
     "84c5006179a5e2e7b0950a5299734ca0de91f0c32771bb981e91f5d9e29cde79",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-separate-pp.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     1.0f,
     7,
     204,
     41995,
     "9f133c7246d3beb58f491befbba5a04fa7fabae4d4d97f22e30b46095ce56208",
     0,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-ensemble.safetensors",
     3,
     4,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     1.0f,
     7,
     408,
     83990,
     "48105fcade5e1f0de16ca5c170b9b8bceee364272573494f0d4be61d730b9040",
     2,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"micro-ensemble.safetensors",
     2,
     2,
     MMS_BISCAN_SEPARATE,
     false,
     false,
     1.0f,
     2,
     172,
     3022,
     "2ff2ad3272a18b60546e466a4a12f9f342c3277a8aa9d65353edfa0b8db7e8f3",
     2,
     MMS_FAMILY_MMUNET,
     {0, 0, 0}},
    {"tiny-plain.safetensors",
     3,
     4,
     0,
     false,
     false,
     0.0f,
     0,
     46,
     20175,
     "1c6553cf4fa7dc2fc7ad943b00afdaa0f9963f3e268b3e544b319c4625cde46d",
     0,
     MMS_FAMILY_PLAIN,
     {4, 8, 16}},
    {"tiny-resenc.safetensors",
     3,
     4,
     0,
     false,
     false,
     0.0f,
     0,
     61,
     18007,
     "c511cbae5dd13d74e47a0a3d9295b13341a9a61ac47ac7a0b8a36346f1a7b54c",
     0,
     MMS_FAMILY_RESENC,
     {4, 8, 8}},
    {"tiny-resenc-nobias.safetensors",
     3,
     4,
     0,
     false,
     false,
     0.0f,
     0,
     46,
     17907,
     "d222dcdca231169a76f6ef81933638a78eeb52037aedaf0d2fcfad9af6e8f4c3",
     0,
     MMS_FAMILY_RESENC,
     {4, 8, 8}},
    {"tiny-plain-ensemble.safetensors",
     3,
     4,
     0,
     false,
     false,
     0.0f,
     0,
     92,
     40350,
     "40c57b9f975b2530ffa7749dc8493a56890226500ecf9d50969adaaf3820873e",
     2,
     MMS_FAMILY_PLAIN,
     {4, 8, 16}},
    {"micro-plain.safetensors",
     3,
     2,
     0,
     false,
     false,
     0.0f,
     0,
     26,
     1825,
     "e6216f674c3b98e9923bc10b4f5a780919b338b01af0a88f503dd29cff673a97",
     0,
     MMS_FAMILY_PLAIN,
     {2, 4, 4}},
};

/* ----------------------------------------------------------------------------- helpers */
static const char *
fixture_path(const char *rel)
{
    static char buf[4][1024];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/tests/fixtures/mmunet/%s", srcdir, rel);
    return buf[i];
}

static const char *
tmp_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static void
die(const char *what)
{
    printf("Bail out! %s\n", what);
    exit(1);
}

static unsigned char *
read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long len;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        die(path);
    b = malloc((size_t)len + 1);
    if (b == NULL || fread(b, 1, (size_t)len, f) != (size_t)len)
        die(path);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A safetensors file: the 8-byte length of header, header, data. */
static void
write_st(const char *path, const void *header, size_t nh, const void *data, size_t nd)
{
    FILE *f = fopen(path, "wb");
    unsigned char len[8];

    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)nh >> (8 * i));
    if (f == NULL || fwrite(len, 1, 8, f) != 8 || (nh > 0 && fwrite(header, 1, nh, f) != nh) ||
        (nd > 0 && fwrite(data, 1, nd, f) != nd) || fclose(f) != 0)
        die(path);
}

static void
write_raw(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (n > 0 && fwrite(data, 1, n, f) != n) || fclose(f) != 0)
        die(path);
}

static void
digest(const void *data, size_t n, char hex[65])
{
    struct mms_sha256 c;
    uint8_t d[32];

    mms_sha256_init(&c);
    mms_sha256_update(&c, data, n);
    mms_sha256_final(&c, d);
    mms_sha256_hex(d, hex);
}

/* Load path; expect rc, *out untouched and a message "path: " + want (exact), or containing
 * want when fragment. */
static void
expect_fail(const char *desc, const char *path, int rc_want, const char *want, bool fragment)
{
    static char sentinel;
    struct mms_model *m = (struct mms_model *)&sentinel;
    char full[4096];
    int rc;

    why[0] = '\0';
    rc = mms_model_load(path, &m, why, sizeof why);
    snprintf(full, sizeof full, "%s: %s", path, want);
    if (!ok(rc == rc_want && m == (struct mms_model *)&sentinel &&
                strncmp(why, path, strlen(path)) == 0 &&
                (fragment ? strstr(why, want) != NULL : strcmp(why, full) == 0),
            "%s", desc)) {
        diag("rc %d (%s), want %d", rc, mms_err_name(rc) ? mms_err_name(rc) : "?", rc_want);
        diag("got:  %s", why);
        diag("want: %s%s", fragment ? "... " : "", fragment ? want : full);
    }
    if (rc == 0 && m != (struct mms_model *)&sentinel)
        mms_model_free(m);
}

/* A copy of src with its header edited (edit(header, arg)) and extra bytes of data appended;
 * the header is padded with spaces so that the data stays 8-byte aligned. */
static void
rewrite(const char *src, const char *dst, void (*edit)(cJSON *, const void *), const void *arg,
        const void *extra, size_t n_extra)
{
    size_t n, nh = 0, len;
    unsigned char *b = read_all(src, &n);
    cJSON *h;
    char *text, *padded;

    for (int i = 7; i >= 0; i--)
        nh = nh << 8 | b[i];
    h = cJSON_ParseWithLength((const char *)b + 8, nh);
    if (h == NULL)
        die("rewrite: header");
    edit(h, arg);
    text = cJSON_PrintUnformatted(h);
    len = strlen(text);
    padded = malloc(len + 8 + n - 8 - nh + n_extra);
    if (padded == NULL)
        die("rewrite");
    memcpy(padded, text, len);
    while ((8 + len) % 8 != 0)
        padded[len++] = ' ';
    memcpy(padded + len, b + 8 + nh, n - 8 - nh);
    if (n_extra > 0)
        memcpy(padded + len + n - 8 - nh, extra, n_extra);
    {
        FILE *f = fopen(dst, "wb");
        unsigned char l8[8];
        for (int i = 0; i < 8; i++)
            l8[i] = (unsigned char)((uint64_t)len >> (8 * i));
        if (f == NULL || fwrite(l8, 1, 8, f) != 8 ||
            fwrite(padded, 1, len + n - 8 - nh + n_extra, f) != len + n - 8 - nh + n_extra ||
            fclose(f) != 0)
            die(dst);
    }
    free(padded);
    free(text);
    cJSON_Delete(h);
    free(b);
}

/* Edits for rewrite(): add F32 tensors (names in arg, NULL-terminated, 2 elements each) at the
 * end of the data, and optionally replace the card's ignorable_tensors. */
struct extra_edit {
    const char *const *names;
    const char *ignorable; /* JSON list, or NULL to keep the card's */
};

static void
add_tensors(cJSON *h, const void *arg)
{
    const struct extra_edit *e = arg;
    int end = 0;
    cJSON *t;

    cJSON_ArrayForEach(t, h)
    {
        cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        if (off != NULL && cJSON_GetArrayItem(off, 1)->valueint > end)
            end = cJSON_GetArrayItem(off, 1)->valueint;
    }
    for (int i = 0; e->names[i] != NULL; i++) {
        cJSON *entry = cJSON_CreateObject(), *shape = cJSON_CreateArray(),
              *off = cJSON_CreateArray();
        cJSON_AddStringToObject(entry, "dtype", "F32");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber(2));
        cJSON_AddItemToObject(entry, "shape", shape);
        cJSON_AddItemToArray(off, cJSON_CreateNumber(end + 8 * i));
        cJSON_AddItemToArray(off, cJSON_CreateNumber(end + 8 * i + 8));
        cJSON_AddItemToObject(entry, "data_offsets", off);
        cJSON_AddItemToObject(h, e->names[i], entry);
    }
    if (e->ignorable != NULL) {
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
        cJSON *card =
            cJSON_Parse(cJSON_GetObjectItemCaseSensitive(meta, "mmsegd.model")->valuestring);
        cJSON *arch = cJSON_GetObjectItemCaseSensitive(card, "architecture");
        char *text;
        cJSON_ReplaceItemInObjectCaseSensitive(arch, "ignorable_tensors",
                                               cJSON_Parse(e->ignorable));
        text = cJSON_PrintUnformatted(card);
        cJSON_ReplaceItemInObjectCaseSensitive(meta, "mmsegd.model", cJSON_CreateString(text));
        free(text);
        cJSON_Delete(card);
    }
}

/* The card text with the value at path replaced by raw (NULL: removed). Free the result. */
static char *
edit_card(const char *card, const char *path, const char *raw)
{
    static const char mark[] = "\"@@RAW@@\"";
    cJSON *root = cJSON_Parse(card), *o = root;
    char buf[256], *parts[8], *save = NULL, *text, *at, *out;
    int n = 0;

    snprintf(buf, sizeof buf, "%s", path);
    for (char *t = strtok_r(buf, ".", &save); t != NULL && n < 8; t = strtok_r(NULL, ".", &save))
        parts[n++] = t;
    for (int i = 0; i < n - 1; i++)
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(parts[i]))
                             : cJSON_GetObjectItemCaseSensitive(o, parts[i]);
    if (o == NULL)
        die(path);
    if (raw == NULL) {
        if (cJSON_IsArray(o))
            cJSON_DeleteItemFromArray(o, atoi(parts[n - 1]));
        else
            cJSON_DeleteItemFromObjectCaseSensitive(o, parts[n - 1]);
    } else if (cJSON_IsArray(o)) {
        cJSON_ReplaceItemInArray(o, atoi(parts[n - 1]), cJSON_CreateString("@@RAW@@"));
    } else if (cJSON_GetObjectItemCaseSensitive(o, parts[n - 1]) != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(o, parts[n - 1], cJSON_CreateString("@@RAW@@"));
    } else {
        cJSON_AddItemToObject(o, parts[n - 1], cJSON_CreateString("@@RAW@@"));
    }
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    at = raw != NULL ? strstr(text, mark) : NULL;
    if (at == NULL)
        return text;
    out = malloc(strlen(text) + strlen(raw) + 1);
    if (out == NULL)
        die("edit_card");
    sprintf(out, "%.*s%s%s", (int)(at - text), text, raw, at + strlen(mark));
    free(text);
    return out;
}

static char log_text[8192];

static void
capture(int level, const char *msg, void *ud)
{
    size_t len = strlen(log_text);
    (void)ud;
    snprintf(log_text + len, sizeof log_text - len, "%d %s\n", level, msg);
}

static bool
is_fixture_file(const char *path)
{
    return strstr(path, ".golden.") == NULL && strstr(path, ".big.") == NULL;
}

/* ----------------------------------------------------------------------------- SHA-256 */
#define SHA_TESTS 7
static void
test_sha256(void)
{
    static const char m448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char m896[] = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                               "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    char hex[65], *million = malloc(1000000), *all = malloc(131 * 64 + 1);
    struct mms_sha256 c;
    uint8_t d[32];

    if (million == NULL || all == NULL)
        die("malloc");
    memset(million, 'a', 1000000);
    digest("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "SHA-256 of the empty message");
    digest("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "SHA-256 of \"abc\" (FIPS 180-4 example)");
    digest(m448, strlen(m448), hex);
    is_str(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
           "SHA-256 of the 448-bit message");
    digest(m896, strlen(m896), hex);
    is_str(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
           "SHA-256 of the 896-bit message");
    digest(million, 1000000, hex);
    is_str(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
           "SHA-256 of one million 'a'");
    /* The same message in pieces of 1 to 127 bytes. */
    mms_sha256_init(&c);
    for (size_t at = 0, k = 1; at < 1000000; k = k % 127 + 1) {
        size_t n = 1000000 - at < k ? 1000000 - at : k;
        mms_sha256_update(&c, million + at, n);
        at += n;
    }
    mms_sha256_final(&c, d);
    mms_sha256_hex(d, hex);
    is_str(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
           "one million 'a' in pieces of 1 to 127 bytes");
    /* Every padding case: the digests of 'a' * n for n = 0..130, chained (hashlib's values). */
    for (int n = 0; n <= 130; n++)
        digest(million, (size_t)n, all + 64 * n);
    digest(all, 131 * 64, hex);
    is_str(hex, "5eee4c50e1b5ec4f1a47f34c25ca988850b49da7904f5ab1b3abc5cc0ae66ef9",
           "messages of 0 to 130 bytes (every padding boundary)");
    free(all);
    free(million);
}

/* ----------------------------------------------------------------------------- fixtures */
#define FIXTURE_TESTS 4
#define FIXTURE_EXTRA_TESTS 6
static void
test_fixture(const char *path)
{
    const char *base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
    const struct fixture *fx = NULL;
    struct mms_model *m = NULL;
    const struct mms_card *c;
    const struct mms_arch *a;
    unsigned char *bytes;
    size_t n;
    char hex[65];
    int rc;

    for (size_t i = 0; i < N_ELEMS(fixtures); i++)
        if (strcmp(fixtures[i].file, base) == 0)
            fx = &fixtures[i];
    rc = mms_model_load(path, &m, why, sizeof why);
    if (!ok(rc == 0 && m != NULL && fx != NULL, "%s loads", base)) {
        diag("rc %d: %s%s", rc, why, fx == NULL ? " (no expectations in the test)" : "");
        for (int i = 1; i < FIXTURE_TESTS; i++)
            skip("not loaded");
        mms_model_free(m);
        return;
    }
    c = mms_model_card(m);
    a = &c->arch;
    {
        bool mmunet = fx->family == MMS_FAMILY_MMUNET;
        /* the head's bias, in a single network and in member 1 of an ensemble */
        const char *head = mmunet ? "head.bias" : "decoder.seg_layers.1.bias";
        char head1[64];
        snprintf(head1, sizeof head1, "ensemble.1.%s", head);
        bool good = a->family == fx->family && a->n_stages == fx->n_stages && a->in_channels == 1 &&
                    a->num_classes == 3 && c->n_labels == 2 && c->inf.patch[0] == 8 &&
                    c->inf.patch[1] == 16 && c->inf.patch[2] == 16 &&
                    mms_model_members(m) == (fx->members > 0 ? fx->members : 1) &&
                    a->n_members == mms_model_members(m);
        if (mmunet)
            good = good && a->biscan == fx->biscan && a->inner_residual == fx->inner_residual &&
                   a->merge_scale == fx->merge_scale && a->mamba_stages == fx->mamba_stages &&
                   a->mamba_last_only == fx->last_only && a->n_ignorable == 1 &&
                   strcmp(a->ignorable_tensors[0], "decoder.ds_heads.*") == 0;
        else
            good = good && a->n_ignorable == 0 && a->conv_bias == (strstr(base, "nobias") == NULL);
        if (fx->members > 0) /* fixtures.py names them fold_0 and fold_3, each complete */
            good = good && strcmp(a->member_names[0], "fold_0") == 0 &&
                   strcmp(a->member_names[1], "fold_3") == 0 &&
                   mms_model_member_tensor(m, 0, head) != NULL &&
                   mms_model_member_tensor(m, 1, head) != NULL &&
                   mms_model_member_tensor(m, 0, head) != mms_model_member_tensor(m, 1, head) &&
                   mms_model_member_tensor(m, 2, head) == NULL &&
                   mms_model_tensor(m, head) == NULL &&
                   mms_model_tensor(m, head1) == mms_model_member_tensor(m, 1, head);
        else
            good = good && a->member_names == NULL && mms_model_member_tensor(m, 0, head) != NULL &&
                   mms_model_member_tensor(m, 0, head) == mms_model_tensor(m, head) &&
                   mms_model_member_tensor(m, 1, head) == NULL;
        for (int s = 0; s < a->n_stages; s++)
            good = good && a->features[s] == (mmunet ? fx->f0 << s : fx->features[s]);
        if (!ok(good, "%s: card (stages, features, mixer, patch, labels, members)", base))
            diag("S %d F %d %d %d biscan %d inner %d merge %g stages %#x last %d labels %d",
                 a->n_stages, a->features[0], a->features[1], a->features[2], a->biscan,
                 a->inner_residual, a->merge_scale, a->mamba_stages, a->mamba_last_only,
                 c->n_labels);
    }
    if (!ok(mms_model_tensor_count(m) == fx->tensors && mms_model_param_count(m) == fx->params,
            "%s: %d tensors, %lld parameters", base, fx->tensors, (long long)fx->params))
        diag("got %d tensors, %lld parameters", mms_model_tensor_count(m),
             (long long)mms_model_param_count(m));
    bytes = read_all(path, &n);
    digest(bytes, n, hex);
    if (!ok(strcmp(mms_model_sha256(m), hex) == 0 && strcmp(hex, fx->sha256) == 0,
            "%s: SHA-256 of the file", base))
        diag("model %s, digest of the bytes %s, sha256sum %s", mms_model_sha256(m), hex,
             fx->sha256);
    free(bytes);
    mms_model_free(m);
}

static void
test_micro_details(void)
{
    const char *path = fixture_path("micro.safetensors");
    struct mms_model *m = NULL;
    const struct mms_tensor *t;
    const struct mms_card *c;
    unsigned char *bytes;
    size_t n, nh = 0;
    cJSON *h;
    int rc = mms_model_load(path, &m, why, sizeof why);

    if (rc != 0) {
        diag("micro: %s", why);
        for (int i = 0; i < FIXTURE_EXTRA_TESTS; i++)
            ok(false, "micro.safetensors loads");
        return;
    }
    c = mms_model_card(m);
    /* Tensor lookup and the data against the file's bytes. */
    t = mms_model_tensor(m, "head.weight");
    bytes = read_all(path, &n);
    for (int i = 7; i >= 0; i--)
        nh = nh << 8 | bytes[i];
    h = cJSON_ParseWithLength((const char *)bytes + 8, nh);
    {
        cJSON *off = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(h, "head.weight"), "data_offsets");
        int begin = cJSON_GetArrayItem(off, 0)->valueint;
        ok(t != NULL && t->rank == 5 && t->shape[0] == 3 && t->shape[1] == 2 && t->shape[2] == 1 &&
               t->count == 6 && strcmp(t->name, "head.weight") == 0 &&
               memcmp(t->data, bytes + 8 + nh + begin, 6 * sizeof(float)) == 0,
           "head.weight: shape (3, 2, 1, 1, 1) and the file's values");
    }
    cJSON_Delete(h);
    free(bytes);
    ok(mms_model_tensor(m, "head.bias") != NULL && mms_model_tensor(m, "no.such") == NULL &&
           mms_model_tensor(m, "") == NULL &&
           mms_model_tensor(m, "encoder.stages.1.blocks.0.mixer.mamba_b.A_log") != NULL &&
           mms_model_tensor(m, "encoder.stages.0.blocks.0.mixer.norm.weight") == NULL,
       "tensors found by name; a stage without Mamba has no mixer");
    t = mms_model_tensor(m, "encoder.stages.1.blocks.0.mixer.mamba_f.x_proj.weight");
    /* C = 4, expand 1, d_state 4, dt_rank auto = 1: x_proj is (R + 2N, E) = (9, 4). */
    ok(t != NULL && t->rank == 2 && t->shape[0] == 9 && t->shape[1] == 4 &&
           mms_arch_dt_rank(&c->arch, 4) == 1 && mms_arch_dt_rank(&c->arch, 16) == 1 &&
           mms_arch_dt_rank(&c->arch, 17) == 2 && mms_arch_dt_rank(&c->arch, 320) == 20,
       "x_proj shape and dt_rank auto = ceil(C / 16)");
    ok(strcmp(c->name, "tiny-micro") == 0 && strcmp(c->version, "1.0.0") == 0 &&
           strcmp(c->license, "CC0-1.0") == 0 && c->json != NULL && c->json[0] == '{' &&
           strcmp(c->date, "2026-01-31") == 0 &&
           strcmp(c->trainer, "tools/mmunet/fixtures.py (random weights)") == 0,
       "card strings and provenance");
    ok(c->pre.orientation == MMS_ORIENT_RAS && c->pre.transpose_forward[2] == 2 &&
           c->pre.transpose_backward[0] == 0 && c->pre.target_spacing_mm[0] == 3.0 &&
           c->pre.target_spacing_mm[1] == 1.5 && c->pre.crop_to_nonzero &&
           c->pre.clip_low == -1000 && c->pre.clip_high == 1000 && c->pre.mean == 0 &&
           c->pre.std == 500 && c->pre.data_order == 3 && c->pre.data_order_z == 0 &&
           c->pre.logits_order == 1 && c->pre.logits_order_z == 0 &&
           c->pre.anisotropy_threshold == 3.0 && c->pre.force_separate_z == -1 &&
           c->inf.tile_step == 0.5 && c->inf.mirror_axes == 7 && c->inf.sigma_scale == 0.125 &&
           c->inf.peak == 10 && c->inf.pad_value == 0 && c->arch.d_state == 4 &&
           c->arch.d_conv == 4 && c->arch.expand == 1 && c->arch.dt_rank == 0 &&
           c->arch.stem_blocks == 2 && c->arch.n_blocks_encoder[0] == 2 &&
           c->arch.n_blocks_decoder[0] == 2 && c->arch.kernel[0][0] == 1 &&
           c->arch.stride[1][1] == 2 && c->arch.ln_eps == 1e-5f && c->arch.norm_eps == 1e-5f &&
           c->arch.negative_slope == 0.01f,
       "preprocessing, inference and architecture values");
    ok(c->labels[0].id == 1 && strcmp(c->labels[0].name, "liver") == 0 &&
           strcmp(c->labels[0].segment_label, "Liver") == 0 &&
           strcmp(c->labels[0].type.code, "10200004") == 0 &&
           strcmp(c->labels[0].category.scheme, "SCT") == 0 && !c->labels[0].has_modifier &&
           c->labels[0].rgb[1] == 140 && c->labels[1].id == 2 &&
           strcmp(c->labels[1].type.meaning, "Spleen") == 0 && !c->labels[1].by_sex[0].present,
       "labels");
    mms_model_free(m);
}

#define DEMO_TESTS 3
static void
test_demo(void)
{
    char path[1024];
    struct mms_model *m = NULL;
    const struct mms_card *c;
    int rc;

    snprintf(path, sizeof path, "%s/models/demo.safetensors", srcdir);
    rc = mms_model_load(path, &m, why, sizeof why);
    if (!ok(rc == 0, "models/demo.safetensors loads")) {
        diag("%s", why);
        skip("not loaded");
        skip("not loaded");
        return;
    }
    c = mms_model_card(m);
    ok(strcmp(c->name, "mmunet-demo-ct") == 0 && strcmp(c->version, "0.2.0") == 0 &&
           c->arch.num_classes == 10 && c->n_labels == 9 && c->labels[0].id == 1 &&
           strcmp(c->labels[0].name, "spleen") == 0 && c->labels[8].id == 9 &&
           strcmp(c->labels[8].name, "pancreas") == 0 && c->arch.n_stages == 4 &&
           c->arch.mamba_stages == 12 && c->inf.patch[0] == 24,
       "demo card: mmunet-demo-ct 0.2.0, 9 labels, Mamba in stages 2 and 3");
    ok(mms_model_tensor_count(m) == 126 && mms_model_param_count(m) == 426802 &&
           strcmp(mms_model_sha256(m),
                  "4dab15b66cce0eae2fde45c2ae7d84a2ce7f97a94be68134d90d0cd46c0f31c3") == 0,
       "demo: 126 tensors, 426802 parameters, the file's SHA-256");
    mms_model_free(m);
}

/* ----------------------------------------------------------------------------- malformed */
static cJSON *
read_manifest(void)
{
    size_t n;
    unsigned char *b = read_all(fixture_path("malformed/manifest.json"), &n);
    cJSON *j = cJSON_ParseWithLength((const char *)b, n);

    free(b);
    if (!cJSON_IsObject(j))
        die("malformed/manifest.json");
    return j;
}

static void
test_malformed(const cJSON *manifest)
{
    const cJSON *e;
    char rel[256];

    cJSON_ArrayForEach(e, manifest)
    {
        snprintf(rel, sizeof rel, "malformed/%s.safetensors", e->string);
        expect_fail(e->string, fixture_path(rel), MMS_EMODEL, e->valuestring, true);
    }
}

/* ----------------------------------------------------------------------------- headers */
#define SPECIAL_TESTS 22
static void
test_headers(void)
{
    const char *path = tmp_path("case.safetensors");
    char text[4096];

    for (size_t i = 0; i < N_ELEMS(header_cases); i++) {
        const struct header_case *h = &header_cases[i];
        write_st(path, h->header, h->header_len, h->data, h->data_len);
        expect_fail(h->desc, path, MMS_EMODEL, h->want, false);
    }

    /* Rule 1: the header length. */
    {
        unsigned char b[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
        write_raw(path, b, sizeof b);
        expect_fail("header length 2^63", path, MMS_EMODEL,
                    "header length 9223372036854775808 exceeds the file (16 bytes) or 100 MB",
                    false);
        b[7] = 0;
        b[0] = 9;
        write_raw(path, b, sizeof b);
        expect_fail("header length one byte past the end", path, MMS_EMODEL,
                    "header length 9 exceeds the file (16 bytes) or 100 MB", false);
        memset(b, 0xff, 8);
        write_raw(path, b, sizeof b);
        expect_fail("header length 2^64 - 1", path, MMS_EMODEL,
                    "header length 18446744073709551615 exceeds the file (16 bytes) or 100 MB",
                    false);
        write_raw(path, b, 0);
        expect_fail("a file of 0 bytes", path, MMS_EMODEL,
                    "file of 0 bytes is shorter than the 8-byte header length", false);
        write_raw(path, b, 7);
        expect_fail("a file of 7 bytes", path, MMS_EMODEL,
                    "file of 7 bytes is shorter than the 8-byte header length", false);
    }
    {
        /* A sparse file: the header may not pass 100 MB even when the file is larger. */
        FILE *f = fopen(path, "wb");
        unsigned char len[8];
        uint64_t nh = 100u * 1024 * 1024 + 1;
        for (int i = 0; i < 8; i++)
            len[i] = (unsigned char)(nh >> (8 * i));
        if (f == NULL || fwrite(len, 1, 8, f) != 8 || fclose(f) != 0 ||
            truncate(path, 110 * 1024 * 1024) != 0)
            die("sparse file");
        expect_fail("header longer than 100 MB", path, MMS_EMODEL,
                    "header length 104857601 exceeds the file (115343360 bytes) or 100 MB", false);
    }

    /* UTF-8: overlong forms, surrogates, beyond U+10FFFF, truncated and stray bytes. */
    {
        static const struct {
            const char *desc, *bytes;
        } bad[] = {
            {"overlong NUL", "\xc0\x80"},
            {"overlong slash", "\xe0\x80\xaf"},
            {"overlong 4-byte", "\xf0\x80\x80\xaf"},
            {"UTF-16 surrogate", "\xed\xa0\x80"},
            {"above U+10FFFF", "\xf4\x90\x80\x80"},
            {"byte 0xf5", "\xf5\x80\x80\x80"},
            {"stray continuation", "\x80"},
            {"truncated sequence", "\xe2\x82"},
        };
        for (size_t i = 0; i < N_ELEMS(bad); i++) {
            int k = snprintf(text, sizeof text, "{\"__metadata__\":{\"k\":\"%s\"}}", bad[i].bytes);
            if (strcmp(bad[i].desc, "truncated sequence") == 0)
                k = snprintf(text, sizeof text, "{\"__metadata__\":{}}   %s", bad[i].bytes);
            write_st(path, text, (size_t)k, NULL, 0);
            snprintf(text, sizeof text, "invalid UTF-8: %s", bad[i].desc);
            expect_fail(text, path, MMS_EMODEL, "header is not valid UTF-8", true);
        }
    }
    write_st(path, "{\"a\xc0\x80\":1}", 9, NULL, 0);
    expect_fail("invalid UTF-8: the offset is named", path, MMS_EMODEL,
                "header is not valid UTF-8 ('utf-8' codec can't decode byte 0xc0 in position 3: "
                "invalid start byte)",
                false);
    write_st(path, "{\"a\xe2\x28\":1}", 9, NULL, 0);
    expect_fail("invalid UTF-8: a bad continuation byte", path, MMS_EMODEL,
                "header is not valid UTF-8 ('utf-8' codec can't decode byte 0xe2 in position 3: "
                "invalid continuation byte)",
                false);
    write_st(path, "{}   \xf0\x9f\x98", 8, NULL, 0);
    expect_fail("invalid UTF-8: the header ends inside a sequence", path, MMS_EMODEL,
                "header is not valid UTF-8 ('utf-8' codec can't decode bytes in position 5-7: "
                "unexpected end of data)",
                false);
    snprintf(text, sizeof text,
             "{\"__metadata__\":{\"k\":\"\xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf "
             "\xed\x9f\xbf \xee\x80\x80 \xc2\x80\"}}");
    write_st(path, text, strlen(text), NULL, 0);
    expect_fail("valid UTF-8 up to U+10FFFF passes", path, MMS_EMODEL,
                "no model card (__metadata__ key 'mmsegd.model')", false);

    /* What C strings cannot hold, and nesting. */
    write_st(path, "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 34, NULL, 0);
    expect_fail("\\u0000 in a string", path, MMS_EMODEL, "header is not JSON", true);
    write_st(path, "{\"__metadata__\":{\"k\":\"\\ud800\"}}", 31, NULL, 0);
    expect_fail("a lone surrogate", path, MMS_EMODEL, "header is not JSON", true);
    {
        int k = snprintf(text, sizeof text, "{\"x\":");
        for (int i = 0; i < 600; i++)
            text[k++] = '[';
        write_st(path, text, (size_t)k, NULL, 0);
        expect_fail("600 nested arrays", path, MMS_EMODEL, "header is not JSON", true);
        k = snprintf(text, sizeof text, "{\"x\":");
        for (int i = 0; i < 500; i++)
            text[k++] = '[';
        for (int i = 0; i < 500; i++)
            text[k++] = ']';
        text[k++] = '}';
        write_st(path, text, (size_t)k, NULL, 0);
        expect_fail("500 nested arrays parse", path, MMS_EMODEL,
                    "tensor 'x': entry needs exactly dtype, shape, data_offsets", false);
    }
}

/* ----------------------------------------------------------------------------- conversion */
#define CONVERSION_TESTS 7
static void
test_conversion(void)
{
    /* F16: 1, -2, 0.5, 65504, 2^-24, 1023 * 2^-24, -0, 0x3555; BF16: 1, -1.5, 3.140625, 2^-133,
     * 0x7f7f, -0; then a 1-element F16 that leaves the F32 tensor after it unaligned. */
    static const uint16_t f16[] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x03ff, 0x8000, 0x3555};
    static const uint16_t bf16[] = {0x3f80, 0xbfc0, 0x4049, 0x0001, 0x7f7f, 0x8000};
    static const float f32[] = {1.25f, -3.5f, 1e-30f};
    const char *path = tmp_path("dtypes.safetensors");
    unsigned char data[64];
    char header[512], hex[65];
    struct mms_st *st = NULL;
    const struct mms_tensor *t;
    size_t nd = 0;
    int rc, k;

    for (size_t i = 0; i < N_ELEMS(f16); i++, nd += 2) {
        data[nd] = (unsigned char)f16[i];
        data[nd + 1] = (unsigned char)(f16[i] >> 8);
    }
    for (size_t i = 0; i < N_ELEMS(bf16); i++, nd += 2) {
        data[nd] = (unsigned char)bf16[i];
        data[nd + 1] = (unsigned char)(bf16[i] >> 8);
    }
    data[nd++] = 0x00; /* one F16: 1.0 */
    data[nd++] = 0x3c;
    memcpy(data + nd, f32, sizeof f32);
    nd += sizeof f32;
    k = snprintf(header, sizeof header,
                 "{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"h\":{\"dtype\":\"F16\",\"shape\":[2,4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[6],\"data_offsets\":[16,28]},"
                 "\"one\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[28,30]},"
                 "\"u\":{\"dtype\":\"F32\",\"shape\":[3,1],\"data_offsets\":[30,42]}}");
    while ((8 + k) % 8 != 0)
        header[k++] = ' ';
    write_st(path, header, (size_t)k, data, nd);
    rc = mms__st_open(path, &st, why, sizeof why);
    if (!ok(rc == 0 && mms__st_count(st) == 4, "F16, BF16 and unaligned F32 tensors load")) {
        diag("rc %d: %s", rc, why);
        for (int i = 1; i < CONVERSION_TESTS; i++)
            skip("not loaded");
        mms__st_close(st);
        return;
    }
    t = mms__st_find(st, "h");
    ok(t != NULL && t->rank == 2 && t->count == 8 && t->data[0] == 1.0f && t->data[1] == -2.0f &&
           t->data[2] == 0.5f && t->data[3] == 65504.0f && t->data[4] == ldexpf(1, -24) &&
           t->data[5] == ldexpf(1023, -24) && t->data[6] == 0 && signbit(t->data[6]) &&
           t->data[7] == 0.333251953125f,
       "F16 to F32: normal, largest, subnormal, negative zero");
    t = mms__st_find(st, "b");
    ok(t != NULL && t->count == 6 && t->data[0] == 1.0f && t->data[1] == -1.5f &&
           t->data[2] == 3.140625f && t->data[3] == ldexpf(1, -133) &&
           t->data[4] == 3.3895313892515355e38f && t->data[5] == 0 && signbit(t->data[5]),
       "BF16 to F32");
    t = mms__st_find(st, "one");
    ok(t != NULL && t->rank == 0 && t->count == 1 && t->data[0] == 1.0f,
       "a rank-0 tensor has one element");
    t = mms__st_find(st, "u");
    ok(t != NULL && ((uintptr_t)t->data % 4) == 0 && t->data[0] == 1.25f && t->data[1] == -3.5f &&
           t->data[2] == 1e-30f,
       "an unaligned F32 tensor is copied to aligned memory");
    ok(mms__st_tensor(st, 0) == mms__st_find(st, "h") && mms__st_tensor(st, 3) == t &&
           mms__st_tensor(st, 4) == NULL && mms__st_find(st, "x") == NULL &&
           strcmp(mms__st_meta(st, "format"), "pt") == 0 && mms__st_meta(st, "x") == NULL,
       "header order, lookup by name, metadata");
    {
        size_t n;
        unsigned char *b = read_all(path, &n);
        digest(b, n, hex);
        is_str(mms__st_sha256(st), hex, "SHA-256 of the file");
        free(b);
    }
    mms__st_close(st);
}

/* ----------------------------------------------------------------------------- cards */
#define CARD_EXTRA_TESTS 2
static void
test_cards(void)
{
    struct mms_st *st = NULL;
    struct mms_card card;
    const char *text;
    char *edited;
    int rc;

    if (mms__st_open(fixture_path("micro.safetensors"), &st, why, sizeof why) != 0 ||
        (text = mms__st_meta(st, "mmsegd.model")) == NULL)
        die("micro.safetensors");
    mms_log_set_sink(capture, NULL);
    for (size_t i = 0; i < N_ELEMS(card_cases); i++) {
        const struct card_case *cc = &card_cases[i];
        edited = edit_card(text, cc->path, cc->raw);
        memset(&card, 0x5a, sizeof card);
        why[0] = '\0';
        rc = mms__card_parse(edited, &card, why, sizeof why);
        if (cc->want[0] == '\0') {
            if (!ok(rc == 0, "card %s = %s is valid", cc->path, cc->raw ? cc->raw : "(removed)"))
                diag("rc %d: %s", rc, why);
            if (rc == 0)
                mms__card_fini(&card);
        } else if (!ok(rc == MMS_EMODEL && strcmp(why, cc->want) == 0, "card %s = %s", cc->path,
                       cc->raw ? cc->raw : "(removed)")) {
            diag("rc %d", rc);
            diag("got:  %s", why);
            diag("want: %s", cc->want);
        }
        free(edited);
    }
    for (size_t i = 0; i < N_ELEMS(card_texts); i++) {
        why[0] = '\0';
        rc = mms__card_parse(card_texts[i].text, &card, why, sizeof why);
        if (!ok(rc == MMS_EMODEL && strcmp(why, card_texts[i].want) == 0, "card text %zu: %s", i,
                card_texts[i].want)) {
            diag("rc %d", rc);
            diag("got:  %s", why);
        }
    }
    /* Unknown keys outside architecture: WARNING, and the card is used. */
    log_text[0] = '\0';
    edited = edit_card(text, "preprocessing.zoom", "2");
    {
        char *twice = edit_card(edited, "comment", "\"x\"");
        rc = mms__card_parse(twice, &card, why, sizeof why);
        free(twice);
    }
    free(edited);
    if (!ok(rc == 0 &&
                strstr(log_text, "4 model card 'tiny-micro': unknown key 'comment' ignored") !=
                    NULL &&
                strstr(log_text, "4 model card 'tiny-micro': preprocessing: unknown key 'zoom' "
                                 "ignored") != NULL,
            "unknown keys outside architecture are logged at WARNING"))
        diag("rc %d %s; log: %s", rc, why, log_text);
    if (rc == 0) {
        ok(strstr(card.json, "\"zoom\":2") != NULL, "the card text is kept as stored");
        mms__card_fini(&card);
    } else {
        skip("card not parsed");
    }
    mms_log_set_sink(NULL, NULL);
    mms__st_close(st);
}

/* ----------------------------------------------------------------------------- names */
#define NAMES_TESTS 7
static void
test_names(void)
{
    static const char *const ds[] = {"decoder.ds_heads.0.weight", "decoder.ds_heads.1.bias", NULL};
    static const char *const near[] = {"decoder.ds_heads", NULL};
    static const char *const dot[] = {"decoderXds_heads.0", NULL};
    static const char *const many[] = {"stem.blocks.0.norm1.num_batches_tracked", "aux-x", "auxx",
                                       NULL};
    static const char *const newline[] = {"aux\nx", NULL};
    static const char zeros[64] = {0};
    const char *micro = fixture_path("micro.safetensors"), *path = tmp_path("names.safetensors");
    struct mms_model *m = NULL;
    struct extra_edit e;
    int rc;

    e = (struct extra_edit){ds, NULL};
    rewrite(micro, path, add_tensors, &e, zeros, 16);
    rc = mms_model_load(path, &m, why, sizeof why);
    if (!ok(rc == 0 && mms_model_tensor_count(m) == 86 && mms_model_param_count(m) == 1511 &&
                mms_model_tensor(m, "decoder.ds_heads.0.weight") == NULL &&
                mms_model_tensor(m, "head.bias") != NULL,
            "ignorable tensors load and are not listed"))
        diag("rc %d: %s", rc, why);
    mms_model_free(m);
    m = NULL;
    e = (struct extra_edit){near, NULL};
    rewrite(micro, path, add_tensors, &e, zeros, 8);
    expect_fail("'decoder.ds_heads.*' needs the dot", path, MMS_EMODEL,
                "unexpected tensor 'decoder.ds_heads'", false);
    e = (struct extra_edit){dot, NULL};
    rewrite(micro, path, add_tensors, &e, zeros, 8);
    expect_fail("a dot in a glob is a dot", path, MMS_EMODEL,
                "unexpected tensor 'decoderXds_heads.0'", false);
    e = (struct extra_edit){many, "[\"*.num_batches_tracked\", \"aux*x*\"]"};
    rewrite(micro, path, add_tensors, &e, zeros, 24);
    rc = mms_model_load(path, &m, why, sizeof why);
    if (!ok(rc == 0 && mms_model_tensor_count(m) == 86, "globs with several stars"))
        diag("rc %d: %s", rc, why);
    mms_model_free(m);
    m = NULL;
    e = (struct extra_edit){newline, "[\"aux*x*\"]"};
    rewrite(micro, path, add_tensors, &e, zeros, 8);
    expect_fail("a star does not match a newline (Python's .*)", path, MMS_EMODEL,
                "unexpected tensor 'aux\\nx'", false);
    e = (struct extra_edit){ds, "[]"};
    rewrite(micro, path, add_tensors, &e, zeros, 16);
    expect_fail("without the glob the first extra tensor is named", path, MMS_EMODEL,
                "unexpected tensor 'decoder.ds_heads.0.weight'", false);
    e = (struct extra_edit){dot, "[\"*\"]"};
    rewrite(micro, path, add_tensors, &e, zeros, 8);
    rc = mms_model_load(path, &m, why, sizeof why);
    if (!ok(rc == 0 && mms_model_tensor_count(m) == 86, "'*' matches every name"))
        diag("rc %d: %s", rc, why);
    mms_model_free(m);
}

/* ----------------------------------------------------------------------------- system */
#define SYSTEM_TESTS 3
static void
test_system_errors(void)
{
    char want[256];

    snprintf(want, sizeof want, "open: %s", mms_strerror(MMS_ENOENT));
    expect_fail("a missing file: MMS_ENOENT", tmp_path("missing.safetensors"), MMS_ENOENT, want,
                false);
    snprintf(want, sizeof want, "open: %s", mms_strerror(MMS_EISDIR));
    expect_fail("a directory: MMS_EISDIR", tmpdir, MMS_EISDIR, want, false);
    {
        struct mms_model *m = NULL;
        ok(mms_model_load(NULL, &m, NULL, 0) == MMS_EINVAL && m == NULL &&
               mms_model_load(tmpdir, NULL, why, sizeof why) == MMS_EINVAL,
           "NULL arguments: MMS_EINVAL");
        mms_model_free(NULL);
    }
}

int
main(void)
{
    glob_t g;
    cJSON *manifest;
    int n_fixtures = 0, n_tests;
    char pattern[1024];

    if (getenv("srcdir") != NULL)
        srcdir = getenv("srcdir");
    if (mkdtemp(tmpdir) == NULL)
        die("mkdtemp");
    snprintf(pattern, sizeof pattern, "%s/tests/fixtures/mmunet/tiny-*.safetensors", srcdir);
    if (glob(pattern, 0, NULL, &g) != 0)
        die("no tests/fixtures/mmunet/tiny-*.safetensors (is $srcdir set?)");
    for (size_t i = 0; i < g.gl_pathc; i++)
        n_fixtures += is_fixture_file(g.gl_pathv[i]);
    manifest = read_manifest();
    n_tests = SHA_TESTS + (n_fixtures + 3) * FIXTURE_TESTS + FIXTURE_EXTRA_TESTS + DEMO_TESTS +
              cJSON_GetArraySize(manifest) + (int)N_ELEMS(header_cases) + SPECIAL_TESTS +
              CONVERSION_TESTS + (int)N_ELEMS(card_cases) + (int)N_ELEMS(card_texts) +
              CARD_EXTRA_TESTS + NAMES_TESTS + SYSTEM_TESTS + 1;
    plan(n_tests, 120);

    test_sha256();
    ok(n_fixtures == 12, "12 tiny fixtures found");
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (is_fixture_file(g.gl_pathv[i]))
            test_fixture(g.gl_pathv[i]);
    test_fixture(fixture_path("micro.safetensors"));
    test_fixture(fixture_path("micro-ensemble.safetensors"));
    test_fixture(fixture_path("micro-plain.safetensors"));
    test_micro_details();
    test_demo();
    test_malformed(manifest);
    test_headers();
    test_conversion();
    test_cards();
    test_names();
    test_system_errors();

    cJSON_Delete(manifest);
    globfree(&g);
    unlink(tmp_path("case.safetensors"));
    unlink(tmp_path("dtypes.safetensors"));
    unlink(tmp_path("names.safetensors"));
    if (rmdir(tmpdir) != 0)
        diag("cannot remove %s", tmpdir);
    return done_testing();
}
