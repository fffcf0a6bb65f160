// The botbox console's only script (served from /console/static, as the
// Content-Security-Policy requires): the live log tail. Lines arrive as
// JSON over server-sent events and are added as text, never as markup.
"use strict";

(function () {
  const MAX_LINES = 500;
  const tail = document.getElementById("tail");
  if (!tail) {
    return;
  }
  const status = document.getElementById("tail-status");
  const say = (text) => {
    if (status) {
      status.textContent = text;
    }
  };
  const span = (cls, text) => {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  };
  const source = new EventSource(tail.dataset.stream);
  source.onopen = () => say("live");
  source.onerror = () => say("reconnecting…");
  source.onmessage = (event) => {
    let line;
    try {
      line = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    const li = document.createElement("li");
    li.className = "line level-" + String(line.level).replace(/[^a-z]/g, "");
    li.append(
      span("level", String(line.level)), " ",
      span("plugin", String(line.plugin)), " ",
      span("text", String(line.message)),
    );
    tail.append(li);
    while (tail.children.length > MAX_LINES) {
      tail.firstElementChild.remove();
    }
    li.scrollIntoView({ block: "nearest" });
  };
})();
