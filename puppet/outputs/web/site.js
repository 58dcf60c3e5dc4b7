// The page `puppet export-web` writes: camera -> mediapipe face landmarker -> mapping.js ->
// the student in WebGL2 (student_renderer.js), all in this browser, with no server behind it.
//
// Everything it needs is in its folder (mediapipe/ is the vendored npm package and model).
// URL options: ?mirror=0 (the character's left follows your left), ?delegate=gpu (mediapipe's
// WebGL backend instead of its CPU one).
import { FaceLandmarker, FilesetResolver } from "./mediapipe/vision_bundle.mjs";
import { PoseMapper, observationFromResult, eulerXyzDeg } from "./mapping.js";

const params = new URLSearchParams(location.search);
const HISTORY = 600;  // poses kept in window.puppet.history (for tests and debugging)

// What the page is doing, read by tests and handy in the console.
const state = (window.puppet = {
  mode: "starting",  // "webgl2" | "no-webgl2" | "failed"
  camera: "starting",  // "on" | "refused" | "none" | "failed" | "insecure"
  tracker: "loading",  // "ready" | "failed"
  pose: null,  // the pose on screen (45 numbers)
  observation: null,  // the last tracked face: blink scores and head angles
  framesTracked: 0,
  facesSeen: 0,
  framesDrawn: 0,
  trackMs: 0,  // mean milliseconds of one detectForVideo (the face landmarker)
  renderMs: 0,  // mean milliseconds of one render call (WebGL2 commands; the GPU may lag)
  history: [],  // [seconds, pose] of the last HISTORY poses
});

const messageBox = document.getElementById("message");
function say(text) {
  const line = document.createElement("p");
  line.textContent = `puppet: ${text}`;
  messageBox.appendChild(line);
  console.warn(line.textContent);
}
const status = (text) => { document.getElementById("status").textContent = text; };

async function fetchOk(url, kind) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return kind === "json" ? response.json() : response.arrayBuffer();
}

// The WebGL2 renderer of the student, or null (and a message) where it cannot run.
async function startRenderer(canvas) {
  const gl = canvas.getContext("webgl2", {
    alpha: true, premultipliedAlpha: false, preserveDrawingBuffer: true, antialias: false,
    depth: false, stencil: false,
  });
  const missing = !gl ? "no WebGL2"
    : !gl.getExtension("EXT_color_buffer_float") ? "no float render targets in its WebGL2" : null;
  if (missing) {
    state.mode = "no-webgl2";
    say(`this browser has ${missing}, so this page cannot draw the character. It is a static`
      + " page with no puppet program behind it that could draw frames instead: open it in a"
      + " browser with WebGL2 (hardware acceleration on; in OBS: Settings > Advanced > Browser"
      + " Source Hardware Acceleration). The tracked pose is shown below instead.");
    document.getElementById("pose").hidden = false;
    return null;
  }
  try {
    const [manifest, weights] = await Promise.all([
      fetchOk("student.json", "json"), fetchOk("student.bin", "binary"),
    ]);
    const renderer = new PuppetStudent.Renderer(gl, manifest, weights);
    state.mode = "webgl2";
    window.puppetRenderer = renderer;
    return renderer;
  } catch (error) {
    state.mode = "failed";
    say(`the character does not load (${error.message}).`);
    return null;
  }
}

// The camera in a <video>, or null (and a message saying why and what to do).
async function startCamera(video) {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    state.camera = "insecure";
    say("the browser gives the camera only to secure pages: open this site over https, or"
      + " from http://localhost. The character idles meanwhile.");
    return null;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false,
    });
    await video.play();
    state.camera = "on";
    return video;
  } catch (error) {
    const reasons = {
      NotAllowedError: ["refused", "the camera was not allowed. Allow it for this page (the"
        + " camera icon in the address bar) and reload. The video never leaves this browser:"
        + " the face tracking runs in this page."],
      SecurityError: ["refused", "the browser does not let this page use the camera."],
      NotFoundError: ["none", "no camera was found. Connect one and reload."],
      OverconstrainedError: ["none", "no camera was found. Connect one and reload."],
      NotReadableError: ["failed", "the camera is in use by another program (or failed to"
        + " start). Close that program and reload."],
    };
    const [camera, text] = reasons[error.name] || ["failed", `the camera did not start (${error.message}).`];
    state.camera = camera;
    say(`${text} The character idles meanwhile.`);
    return null;
  }
}

async function startTracker() {
  try {
    const base = new URL("mediapipe/", location.href).href;
    const fileset = await FilesetResolver.forVisionTasks(`${base}wasm`);
    const landmarker = await FaceLandmarker.createFromOptions(fileset, {
      baseOptions: {
        modelAssetPath: `${base}face_landmarker.task`,
        delegate: params.get("delegate") === "gpu" ? "GPU" : "CPU",
      },
      runningMode: "VIDEO",
      numFaces: 1,
      outputFaceBlendshapes: true,
      outputFacialTransformationMatrixes: true,
    });
    state.tracker = "ready";
    return landmarker;
  } catch (error) {
    state.tracker = "failed";
    say(`the face tracker did not load (${error.message}).`);
    return null;
  }
}

function showPose(pose, names) {
  const shown = ["eye_wink_left", "eye_wink_right", "mouth_aaa", "head_x", "head_y", "neck_z"];
  document.getElementById("pose").textContent = shown
    .map((name) => `${name.padEnd(16)} ${pose[names.indexOf(name)].toFixed(2)}`).join("\n");
}

async function main() {
  const canvas = document.getElementById("puppet");
  const video = document.getElementById("camera");
  const constants = await fetchOk("mapping.json", "json");
  const names = constants.parameters.map((p) => p.name);
  const mapper = new PoseMapper(constants, { mirrorCharacter: params.get("mirror") !== "0" });
  window.puppetMapper = mapper;

  const mirror = document.getElementById("mirror");
  mirror.checked = mapper.mirrorCharacter;
  mirror.addEventListener("change", () => { mapper.mirrorCharacter = mirror.checked; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "m" || event.key === "M") {
      mirror.checked = !mirror.checked;
      mapper.mirrorCharacter = mirror.checked;
    }
  });

  // The three start together; the character idles until camera and tracker are both up.
  let renderer = null;
  let camera = null;
  let landmarker = null;
  startRenderer(canvas).then((r) => { renderer = r; });
  startCamera(video).then((v) => { camera = v; });
  startTracker().then((l) => { landmarker = l; });

  let lastVideoTime = -1;
  const frame = () => {
    requestAnimationFrame(frame);
    const now = performance.now();
    let pose = null;
    if (camera && landmarker) {
      if (video.readyState < 2 || video.currentTime === lastVideoTime) return;  // no new image
      lastVideoTime = video.currentTime;
      const result = landmarker.detectForVideo(video, now);
      state.trackMs += (performance.now() - now - state.trackMs) / (state.framesTracked + 1);
      const observation = observationFromResult(result);
      pose = mapper.update(observation, now / 1000);
      state.framesTracked += 1;
      if (observation) {
        state.facesSeen += 1;
        const b = observation.blendshapes;
        state.observation = {
          eyeBlinkLeft: b.eyeBlinkLeft, eyeBlinkRight: b.eyeBlinkRight, jawOpen: b.jawOpen,
          eulerDeg: observation.rotation ? eulerXyzDeg(observation.rotation) : null,
        };
      } else {
        state.observation = null;
      }
      status(observation ? "tracking" : "no face");
    } else {
      pose = mapper.update(null, now / 1000);  // no face to follow (yet): idle motion
      status(state.tracker === "loading" ? "loading the face tracker" : "idle");
    }
    state.pose = Array.from(pose);
    state.history.push([now / 1000, state.pose]);
    if (state.history.length > HISTORY) state.history.shift();
    if (renderer) {
      const width = Math.max(1, Math.round(canvas.clientWidth * devicePixelRatio));
      const height = Math.max(1, Math.round(canvas.clientHeight * devicePixelRatio));
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      const started = performance.now();
      renderer.render(pose);
      state.renderMs += (performance.now() - started - state.renderMs) / (state.framesDrawn + 1);
      state.framesDrawn += 1;
    } else if (state.mode === "no-webgl2") {
      showPose(pose, names);
    }
  };
  requestAnimationFrame(frame);
}

main().catch((error) => {
  state.mode = "failed";
  say(`the page failed to start (${error.message}).`);
});
