// The puppet student (format puppet-student/2) in WebGL2: the same function as
// StudentPoser.pose in poser_models/student.py, from the files puppet/outputs/web_student.py
// writes (a JSON manifest and one little-endian binary).
//
// The small pose MLPs run here on the CPU (a few hundred thousand multiply-adds a frame);
// the coefficient x basis mixes, the warps and the composition run in fragment shaders, in
// float32 render targets (EXT_color_buffer_float). Every sample is a bilinear read written
// out by hand with texelFetch and clamped indices: that is cv2.remap with BORDER_REPLICATE and
// cv2.resize INTER_LINEAR (half-pixel centres) exactly, where hardware filtering of float
// textures is optional in WebGL2 and of unknown precision.
"use strict";

const PuppetStudent = (() => {
  const FORMAT = "puppet-web-student/1";

  function arrayView(manifest, buffer, name) {
    const entry = manifest.arrays[name];
    if (!entry) throw new Error(`the student has no array ${name}`);
    const count = entry.shape.reduce((a, b) => a * b, 1);
    const type = { float16: Uint16Array, float32: Float32Array, uint8: Uint8Array }[entry.dtype];
    return new type(buffer, entry.offset, count);
  }

  // Linear-SiLU-Linear-SiLU-Linear; weights (outputs, inputs) row-major as in the file.
  class Mlp {
    constructor(manifest, buffer, prefix) {
      this.layers = [];
      for (let j = 0; j < manifest.mlp_depth; j++) {
        const shape = manifest.arrays[`${prefix}.${j}.weight`].shape;
        this.layers.push({
          weight: arrayView(manifest, buffer, `${prefix}.${j}.weight`),
          bias: arrayView(manifest, buffer, `${prefix}.${j}.bias`),
          outputs: shape[0],
          inputs: shape[1],
        });
      }
    }

    run(x) {
      this.layers.forEach((layer, j) => {
        const { weight, bias, outputs, inputs } = layer;
        const last = j === this.layers.length - 1;
        const y = new Float32Array(outputs);
        for (let o = 0; o < outputs; o++) {
          let sum = 0;
          const row = o * inputs;
          for (let i = 0; i < inputs; i++) sum += weight[row + i] * x[i];
          sum += bias[o];
          y[o] = last ? sum : sum / (1 + Math.exp(-sum));
        }
        x = y;
      });
      return x;
    }
  }

  // [x, sin(pi f x) (f-major), cos(pi f x)], the angles rounded to float32 as numpy does.
  function fourierFeatures(values, frequencies) {
    const n = values.length;
    const out = new Float32Array(n * (1 + 2 * frequencies.length));
    out.set(values);
    frequencies.forEach((f, j) => {
      const pif = Math.fround(Math.PI * f);
      for (let i = 0; i < n; i++) {
        const angle = Math.fround(pif * values[i]);
        out[n + j * n + i] = Math.sin(angle);
        out[n + (frequencies.length + j) * n + i] = Math.cos(angle);
      }
    });
    return out;
  }

  function monomials(values, exponents) {
    return Float32Array.from(exponents, (e) =>
      Math.fround(Math.fround(values[0] ** e[0] * values[1] ** e[1]) * values[2] ** e[2]));
  }

  const VERTEX = `#version 300 es
void main() {
  // One triangle over the whole target.
  vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
  gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}`;

  const HEADER = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
precision highp sampler2DArray;
out vec4 color;
float coefficient(int k);
`;

  // A coefficient x basis mix over a box of a field (zero outside the box).
  function mixShader(box, terms) {
    const [top, left, height, width] = box;
    return `${HEADER}
uniform sampler2DArray uBasis;
uniform int uFirst;  // the basis layer of term 0
uniform vec4 uCoefficients[${Math.ceil(terms / 4)}];
float coefficient(int k) { return uCoefficients[k >> 2][k & 3]; }
void main() {
  ivec2 t = ivec2(gl_FragCoord.xy) - ivec2(${left}, ${top});
  vec4 sum = vec4(0.0);
  if (t.x >= 0 && t.y >= 0 && t.x < ${width} && t.y < ${height}) {
    for (int k = 0; k < ${terms}; k++) sum += coefficient(k) * texelFetch(uBasis, ivec3(t, uFirst + k), 0);
  }
  color = sum;
}`;
  }

  // What the expression adds to the face box: every part's mix inside its own box.
  function faceShader(config) {
    const [top, left] = config.face_box;
    const rank = config.part_rank;
    const parts = config.parts.map(([pt, pl, ph, pw], i) => `
  {
    ivec2 t = p - ivec2(${pl}, ${pt});
    if (t.x >= 0 && t.y >= 0 && t.x < ${pw} && t.y < ${ph}) {
      for (int k = 0; k < ${rank}; k++) sum += coefficient(${i * rank} + k) * texelFetch(uPart${i}, ivec3(t, k), 0);
    }
  }`).join("");
    const samplers = config.parts.map((_, i) => `uniform sampler2DArray uPart${i};`).join("\n");
    return `${HEADER}
${samplers}
uniform vec4 uCoefficients[${Math.ceil((config.parts.length * rank) / 4)}];
float coefficient(int k) { return uCoefficients[k >> 2][k & 3]; }
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy) + ivec2(${left}, ${top});  // image pixel
  vec4 sum = vec4(0.0);${parts}
  color = sum;
}`;
  }

  // Warps, composition, residual and the sRGB conversion, per canvas pixel.
  function frameShader(config) {
    const size = config.image_size;
    const [faceTop, faceLeft, faceHeight, faceWidth] = config.face_box;
    const fs = config.field_size;
    const bfs = config.body_field_size;
    return `${HEADER}
float coefficient(int k) { return 0.0; }
uniform sampler2DArray uLayers;     // (layers) x size^2, premultiplied linear RGBA
uniform sampler2DArray uFaceMasks;  // (layers) x face box: each layer's share of the face
uniform sampler2D uFace;            // the face delta (face box)
uniform sampler2DArray uHead;       // head flow per layer, field_size^2
uniform sampler2DArray uBody;       // body flow per layer, body_field_size^2
uniform sampler2D uResidual;        // field_size^2
uniform sampler2D uSrgb;            // linear -> sRGB byte table, 128 x 128
uniform vec2 uOrigin;               // canvas pixels: where the image's corner lies
uniform float uScale;               // canvas pixels per image pixel
uniform float uCanvasHeight;

// Bilinear, pixel centres at integers, indices clamped to the edge (BORDER_REPLICATE).
vec4 sampleLayer(sampler2DArray t, int layer, vec2 c, int size) {
  vec2 f = floor(c);
  vec2 w = c - f;
  ivec2 a = clamp(ivec2(f), ivec2(0), ivec2(size - 1));
  ivec2 b = clamp(ivec2(f) + 1, ivec2(0), ivec2(size - 1));
  vec4 top = mix(texelFetch(t, ivec3(a.x, a.y, layer), 0), texelFetch(t, ivec3(b.x, a.y, layer), 0), w.x);
  vec4 bottom = mix(texelFetch(t, ivec3(a.x, b.y, layer), 0), texelFetch(t, ivec3(b.x, b.y, layer), 0), w.x);
  return mix(top, bottom, w.y);
}

vec4 sample2D(sampler2D t, vec2 c, int size) {
  vec2 f = floor(c);
  vec2 w = c - f;
  ivec2 a = clamp(ivec2(f), ivec2(0), ivec2(size - 1));
  ivec2 b = clamp(ivec2(f) + 1, ivec2(0), ivec2(size - 1));
  vec4 top = mix(texelFetch(t, a, 0), texelFetch(t, ivec2(b.x, a.y), 0), w.x);
  vec4 bottom = mix(texelFetch(t, ivec2(a.x, b.y), 0), texelFetch(t, b, 0), w.x);
  return mix(top, bottom, w.y);
}

// The face-posed layer: the layer image plus its share of the face delta in the face box.
vec4 posedTexel(int layer, ivec2 i) {
  vec4 v = texelFetch(uLayers, ivec3(i, layer), 0);
  ivec2 f = i - ivec2(${faceLeft}, ${faceTop});
  if (f.x >= 0 && f.y >= 0 && f.x < ${faceWidth} && f.y < ${faceHeight}) {
    v += texelFetch(uFace, f, 0) * texelFetch(uFaceMasks, ivec3(f, layer), 0).r;
  }
  return v;
}

vec4 samplePosed(int layer, vec2 c) {
  vec2 f = floor(c);
  vec2 w = c - f;
  ivec2 a = clamp(ivec2(f), ivec2(0), ivec2(${size - 1}));
  ivec2 b = clamp(ivec2(f) + 1, ivec2(0), ivec2(${size - 1}));
  vec4 top = mix(posedTexel(layer, a), posedTexel(layer, ivec2(b.x, a.y)), w.x);
  vec4 bottom = mix(posedTexel(layer, ivec2(a.x, b.y)), posedTexel(layer, b), w.x);
  return mix(top, bottom, w.y);
}

float srgbByte(float index) {
  int k = int(index);
  return texelFetch(uSrgb, ivec2(k & 127, k >> 7), 0).r;
}

void main() {
  vec2 canvas = vec2(gl_FragCoord.x, uCanvasHeight - gl_FragCoord.y);  // top-down
  vec2 p = (canvas - uOrigin) / uScale - 0.5;  // image pixel, centres at integers
  if (any(lessThan(p, vec2(-0.5))) || any(greaterThanEqual(p, vec2(${size}.0 - 0.5)))) {
    color = vec4(0.0);
    return;
  }
  const float bodyScale = ${bfs}.0 / ${size}.0;
  const float fieldScale = ${fs}.0 / ${size}.0;
  vec4 frame = vec4(0.0);
  for (int layer = 0; layer < ${config.layers}; layer++) {  // back to front
    vec2 q = p + sampleLayer(uBody, layer, (p + 0.5) * bodyScale - 0.5, ${bfs}).xy;
    vec2 r = q + sampleLayer(uHead, layer, q * fieldScale + (0.5 * fieldScale - 0.5), ${fs}).xy;
    vec4 image = samplePosed(layer, r);
    frame = layer == 0 ? image : frame * (1.0 - image.a) + image;  // "over", premultiplied
  }
  frame += sample2D(uResidual, (p + 0.5) * fieldScale - 0.5, ${fs});
  // premultiplied_linear_to_rgba: clip, un-premultiply, table lookup; straight alpha out.
  float alpha = clamp(frame.a, 0.0, 1.0);
  vec3 index = floor(clamp(frame.rgb * (16383.0 / max(alpha, 1e-6)), 0.0, 16383.0) + 0.5);
  color = vec4(srgbByte(index.r), srgbByte(index.g), srgbByte(index.b), floor(alpha * 255.0 + 0.5) / 255.0);
}`;
  }

  class Renderer {
    // gl: a WebGL2 context (alpha, premultipliedAlpha: false); manifest: the parsed JSON;
    // buffer: the binary as an ArrayBuffer. Throws an Error naming what is missing.
    constructor(gl, manifest, buffer) {
      if (manifest.format !== FORMAT) throw new Error(`student format ${manifest.format}, expected ${FORMAT}`);
      if (buffer.byteLength !== manifest.bytes) throw new Error("the student binary is truncated");
      if (!gl.getExtension("EXT_color_buffer_float")) throw new Error("no EXT_color_buffer_float (float render targets)");
      this.gl = gl;
      this.manifest = manifest;
      const c = (this.config = manifest.config);
      const view = (name) => arrayView(manifest, buffer, name);
      this.lower = Float32Array.from(manifest.lower);
      this.upper = Float32Array.from(manifest.upper);
      this.frequencies = c.fourier;
      this.partMlps = c.parts.map((_, i) => new Mlp(manifest, buffer, `part${i}.mlp`));
      this.residualMlp = new Mlp(manifest, buffer, "residual.mlp");
      gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
      const terms = (name) => manifest.arrays[name].shape[1];
      const size = c.image_size;
      const [, , fh, fw] = c.face_box;
      const array = (name, format, width, height, depth, data) =>
        this.texture(gl.TEXTURE_2D_ARRAY, format, width, height, depth, data);
      const half = (name) => view(name);
      this.textures = {
        layers: array("layers", "RGBA16F", size, size, c.layers, half("layers")),
        faceMasks: array("face_masks", "R32F", fw, fh, c.layers, view("face_masks")),
        parts: c.parts.map(([, , ph, pw], i) =>
          array(`part${i}.basis`, "RGBA16F", pw, ph, c.part_rank, half(`part${i}.basis`))),
        headBasis: array("head.basis", "RG16F", c.head_box[3], c.head_box[2], c.layers * terms("head.basis"), half("head.basis")),
        bodyBasis: array("body.basis", "RG16F", c.body_box[3], c.body_box[2], c.layers * terms("body.basis"), half("body.basis")),
        residualBasis: array("residual.basis", "RGBA16F", c.residual_box[3], c.residual_box[2], c.residual_rank, half("residual.basis")),
        srgb: this.texture(gl.TEXTURE_2D, "R8", 128, 128, 1, view("srgb_table")),
        // Render targets, rewritten every frame.
        face: this.texture(gl.TEXTURE_2D, "RGBA32F", fw, fh, 1, null),
        head: this.texture(gl.TEXTURE_2D_ARRAY, "RG32F", c.field_size, c.field_size, c.layers, null),
        body: this.texture(gl.TEXTURE_2D_ARRAY, "RG32F", c.body_field_size, c.body_field_size, c.layers, null),
        residual: this.texture(gl.TEXTURE_2D, "RGBA32F", c.field_size, c.field_size, 1, null),
      };
      this.headTerms = terms("head.basis");
      this.bodyTerms = terms("body.basis");
      this.programs = {
        face: this.program(faceShader(c)),
        head: this.program(mixShader(c.head_box, this.headTerms)),
        body: this.program(mixShader(c.body_box, this.bodyTerms)),
        residual: this.program(mixShader(c.residual_box, c.residual_rank)),
        frame: this.program(frameShader(c)),
      };
      this.framebuffer = gl.createFramebuffer();
      this.vertexArray = gl.createVertexArray();
      const error = gl.getError();
      if (error !== gl.NO_ERROR) throw new Error(`WebGL error ${error} while loading the student`);
    }

    texture(target, format, width, height, depth, data) {
      const gl = this.gl;
      const formats = {
        RGBA16F: [gl.RGBA, gl.HALF_FLOAT], RG16F: [gl.RG, gl.HALF_FLOAT],
        RGBA32F: [gl.RGBA, gl.FLOAT], RG32F: [gl.RG, gl.FLOAT], R32F: [gl.RED, gl.FLOAT],
        R8: [gl.RED, gl.UNSIGNED_BYTE],
      };
      const [layout, type] = formats[format];
      const texture = gl.createTexture();
      gl.bindTexture(target, texture);
      // Read with texelFetch only: no filtering, no mipmaps (float32 is not filterable).
      gl.texParameteri(target, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(target, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      if (target === gl.TEXTURE_2D) {
        gl.texImage2D(target, 0, gl[format], width, height, 0, layout, type, data);
      } else {
        gl.texImage3D(target, 0, gl[format], width, height, depth, 0, layout, type, data);
      }
      return texture;
    }

    program(fragmentSource) {
      const gl = this.gl;
      const compile = (kind, source) => {
        const shader = gl.createShader(kind);
        gl.shaderSource(shader, source);
        gl.compileShader(shader);
        if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
          throw new Error(`shader does not compile: ${gl.getShaderInfoLog(shader)}`);
        }
        return shader;
      };
      const program = gl.createProgram();
      gl.attachShader(program, compile(gl.VERTEX_SHADER, VERTEX));
      gl.attachShader(program, compile(gl.FRAGMENT_SHADER, fragmentSource));
      gl.linkProgram(program);
      if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
        throw new Error(`shader does not link: ${gl.getProgramInfoLog(program)}`);
      }
      const uniforms = {};
      const count = gl.getProgramParameter(program, gl.ACTIVE_UNIFORMS);
      for (let i = 0; i < count; i++) {
        const name = gl.getActiveUniform(program, i).name.replace(/\[0\]$/, "");
        uniforms[name] = gl.getUniformLocation(program, name);
      }
      return { program, uniforms };
    }

    // Bind samplers {uniform: [target, texture]} to units 0, 1, ...
    use(program, samplers) {
      const gl = this.gl;
      gl.useProgram(program.program);
      Object.entries(samplers).forEach(([name, [target, texture]], unit) => {
        gl.activeTexture(gl.TEXTURE0 + unit);
        gl.bindTexture(target, texture);
        gl.uniform1i(program.uniforms[name], unit);
      });
    }

    drawInto(texture, layer, width, height) {
      const gl = this.gl;
      gl.bindFramebuffer(gl.FRAMEBUFFER, this.framebuffer);
      if (layer === null) {
        gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
      } else {
        gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, texture, 0, layer);
      }
      gl.viewport(0, 0, width, height);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }

    static padded(values) {
      const out = new Float32Array(Math.ceil(values.length / 4) * 4);
      out.set(values);
      return out;
    }

    // Draw the pose (45 numbers, clipped to the pose ranges) at the canvas size, the image
    // fitted inside it (centred), with a transparent background.
    render(pose) {
      const gl = this.gl;
      const c = this.config;
      const m = this.manifest;
      const x = new Float32Array(m.pose_size);
      for (let i = 0; i < x.length; i++) x[i] = Math.min(Math.max(pose[i], this.lower[i]), this.upper[i]);
      const t = this.textures;
      gl.bindVertexArray(this.vertexArray);
      gl.disable(gl.BLEND);

      const partCoefficients = new Float32Array(c.parts.length * c.part_rank);
      c.part_inputs.forEach((inputs, i) => {
        const features = fourierFeatures(Float32Array.from(inputs, (k) => x[k]), this.frequencies);
        partCoefficients.set(this.partMlps[i].run(features), i * c.part_rank);
      });
      const face = this.programs.face;
      const partSamplers = {};
      t.parts.forEach((texture, i) => { partSamplers[`uPart${i}`] = [gl.TEXTURE_2D_ARRAY, texture]; });
      this.use(face, partSamplers);
      gl.uniform4fv(face.uniforms.uCoefficients, Renderer.padded(partCoefficients));
      this.drawInto(t.face, null, c.face_box[3], c.face_box[2]);

      const fields = [
        ["head", t.headBasis, t.head, this.headTerms, m.head_indices, m.head_exponents, c.field_size],
        ["body", t.bodyBasis, t.body, this.bodyTerms, m.body_indices, m.body_exponents, c.body_field_size],
      ];
      for (const [name, basis, target, terms, indices, exponents, fieldSize] of fields) {
        const program = this.programs[name];
        this.use(program, { uBasis: [gl.TEXTURE_2D_ARRAY, basis] });
        gl.uniform4fv(program.uniforms.uCoefficients, Renderer.padded(monomials(Array.from(indices, (k) => x[k]), exponents)));
        for (let layer = 0; layer < c.layers; layer++) {
          gl.uniform1i(program.uniforms.uFirst, layer * terms);
          this.drawInto(target, layer, fieldSize, fieldSize);
        }
      }
      const residual = this.programs.residual;
      this.use(residual, { uBasis: [gl.TEXTURE_2D_ARRAY, t.residualBasis] });
      gl.uniform4fv(residual.uniforms.uCoefficients, Renderer.padded(this.residualMlp.run(x)));
      gl.uniform1i(residual.uniforms.uFirst, 0);
      this.drawInto(t.residual, null, c.field_size, c.field_size);

      const frame = this.programs.frame;
      this.use(frame, {
        uLayers: [gl.TEXTURE_2D_ARRAY, t.layers], uFaceMasks: [gl.TEXTURE_2D_ARRAY, t.faceMasks],
        uFace: [gl.TEXTURE_2D, t.face], uHead: [gl.TEXTURE_2D_ARRAY, t.head],
        uBody: [gl.TEXTURE_2D_ARRAY, t.body], uResidual: [gl.TEXTURE_2D, t.residual],
        uSrgb: [gl.TEXTURE_2D, t.srgb],
      });
      const width = gl.drawingBufferWidth;
      const height = gl.drawingBufferHeight;
      const scale = Math.min(width, height) / c.image_size;
      gl.uniform2f(frame.uniforms.uOrigin, (width - scale * c.image_size) / 2, (height - scale * c.image_size) / 2);
      gl.uniform1f(frame.uniforms.uScale, scale);
      gl.uniform1f(frame.uniforms.uCanvasHeight, height);
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      gl.viewport(0, 0, width, height);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }
  }

  return { Renderer, FORMAT };
})();
