// The securechat page. Text from people and from the AI is never parsed as markup: a
// person's message is inserted with textContent, a reply is built as DOM nodes by
// markdown.js (a safe Markdown subset), and both files are loaded from the same origin as
// modules, so the app's CSP (script-src 'self', no inline script) stays strict.
import { renderMarkdown } from "./markdown.js";

(() => {
  const $ = (id) => document.getElementById(id);
  const CSRF_HEADER = "X-CSRF-Token";
  const PAGE = 200;
  const EVENT_STREAM = "text/event-stream";
  // The status the JSON route would have answered for a backend failure in a stream.
  const STREAM_STATUS = { backend_bad_response: 502, backend_unavailable: 503, backend_timeout: 504 };
  const state = {
    csrf: null, username: null, conversations: [], current: null, busy: false, offerRetry: false,
  };

  class ApiError extends Error {
    constructor(status, code, message, retryAfter = null) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter; // seconds the server asked us to wait, or null
    }
  }

  // Retry-After is a number of seconds or an HTTP date; null when absent or unreadable.
  function retryAfter(response) {
    const value = (response.headers.get("Retry-After") || "").trim();
    if (/^\d+$/.test(value)) return Number(value);
    const date = Date.parse(value);
    return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
  }

  // --- talking to the JSON API ---------------------------------------------------

  async function request(method, path, body, accept) {
    const headers = { Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.csrf) headers[CSRF_HEADER] = state.csrf;
    try {
      return await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, "unreachable", "Cannot reach the server. Check that it is " +
        "running and your connection works, then try again.");
    }
  }

  async function api(method, path, body) {
    return decoded(await request(method, path, body, "application/json"));
  }

  async function decoded(response) {
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, String(error.code || "error"),
        String(error.message || response.statusText || "The request failed."),
        // Flask-Limiter sends Retry-After on every limited route; it means "wait" only here.
        response.status === 429 || response.status === 503 ? retryAfter(response) : null);
    }
    if (data === null) throw new ApiError(response.status, "bad_response", "The server did not answer JSON.");
    return data;
  }

  function brokenStream(text) {
    const error = new ApiError(0, "stream_broken", "The connection broke before the reply was complete.");
    error.partial = text;
    return error;
  }

  // Send with Accept: text/event-stream and call onText(textSoFar) as the reply arrives.
  // Returns the stored reply; an error thrown once the stream began has .delivered set
  // (the server stored the message) and .partial (what arrived, stored marked incomplete).
  async function streamed(path, body, onText) {
    const response = await request("POST", path, body, EVENT_STREAM);
    if (!(response.headers.get("Content-Type") || "").startsWith(EVENT_STREAM)) {
      await decoded(response); // the server's JSON error
      throw new ApiError(response.status, "bad_response", "The server did not answer with a stream.");
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (_) {
          throw brokenStream(text);
        }
        if (chunk.done) throw brokenStream(text);
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue;
          const payload = JSON.parse(data.join("\n"));
          if (name === "delta") {
            text += payload.content;
            onText(text);
          } else if (name === "done") {
            return payload;
          } else if (name === "error") {
            const error = payload.error || {};
            const failure = new ApiError(STREAM_STATUS[error.code] || 502, String(error.code || "error"),
              String(error.message || "The reply failed."));
            failure.partial = text;
            throw failure;
          }
        }
      }
    } catch (error) {
      const failure = error instanceof ApiError ? error : brokenStream(text);
      failure.delivered = true;
      throw failure;
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  const conversationPath = (id) => "/api/conversations/" + encodeURIComponent(id);

  async function allConversations() {
    // Pages come starred first, then by latest activity; the list is every page.
    const found = [];
    let before = null;
    do {
      const query = "?limit=" + PAGE + (before === null ? "" : "&before=" + encodeURIComponent(before));
      const page = await api("GET", "/api/conversations" + query);
      found.push(...page.conversations);
      before = page.next_before;
    } while (before !== null && before !== undefined);
    return found;
  }

  async function fullHistory(id) {
    // Pages come newest first; each page is oldest to newest within itself.
    const pages = [];
    let before = null;
    do {
      const query = "?limit=" + PAGE + (before === null ? "" : "&before=" + encodeURIComponent(before));
      const page = await api("GET", conversationPath(id) + "/messages" + query);
      pages.unshift(page.messages);
      before = page.next_before;
    } while (before !== null && before !== undefined);
    return pages.flat();
  }

  // --- showing things --------------------------------------------------------------

  // "42 seconds", "1 second", "3 minutes": how long the server asked us to wait.
  function waitTime(seconds) {
    const whole = Math.max(1, Math.ceil(seconds));
    if (whole < 120) return whole === 1 ? "1 second" : whole + " seconds";
    return Math.ceil(whole / 60) + " minutes";
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return "Something went wrong on this page; reload it and try again.";
    const again = error.retryAfter === null ? "Try again." : "Try again in " + waitTime(error.retryAfter) + ".";
    if (error.status === 0) return error.message;
    if (error.status === 429) {
      return error.message + (error.retryAfter === null ? " Wait a moment, then try again." : " " + again);
    }
    if (error.status >= 500) {
      return "The server could not answer: " + error.message + " (HTTP " + error.status + "). " + again;
    }
    return error.message;
  }

  function notify(text, isError = true) {
    const notice = $("notice");
    notice.textContent = text || "";
    notice.hidden = !text;
    notice.classList.toggle("error", Boolean(text) && isError);
  }

  function setBusy(busy, thinking) {
    state.busy = busy;
    // The message box stays enabled: what the person types while a reply is on its way is
    // kept (only sending waits, see onSend and onKeydown).
    for (const el of document.querySelectorAll("#chat button, #auth button, #logout")) {
      el.disabled = busy;
    }
    if (!busy) $("delete-conversation").disabled = state.current === null;
    $("thinking").hidden = !thinking;
    $("retry").hidden = busy || !state.offerRetry;
  }

  function showAuth() {
    state.csrf = state.username = state.current = null;
    state.conversations = [];
    $("chat").hidden = true;
    $("account").hidden = true;
    $("auth").hidden = false;
    $("messages").replaceChildren();
    $("conversation-list").replaceChildren();
    $("username").focus();
  }

  function showChat() {
    $("who").textContent = state.username;
    $("auth").hidden = true;
    $("account").hidden = false;
    $("chat").hidden = false;
    $("password").value = "";
  }

  function renderConversations() {
    const items = state.conversations.map((conversation) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.textContent = conversation.title;
      button.title = conversation.title;
      button.dataset.id = conversation.id;
      if (conversation.id === state.current) button.setAttribute("aria-current", "true");
      item.append(button);
      return item;
    });
    $("conversation-list").replaceChildren(...items);
    const current = state.conversations.find((c) => c.id === state.current);
    $("thread-title").textContent = current ? current.title : "New conversation";
    $("delete-conversation").disabled = state.busy || !current;
  }

  function messageItem(message) {
    const item = document.createElement("li");
    item.className = "message " + (message.role === "user" ? "user" : "assistant");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = (message.role === "user" ? "You" : "Assistant") +
      (message.incomplete ? " · cut short" : "");
    const body = document.createElement("div");
    if (message.role === "user") {
      body.className = "body text";
      body.textContent = message.content;
    } else {
      body.className = "body markdown";
      body.append(withCopyButtons(renderMarkdown(message.content)));
    }
    item.append(who, body);
    return item;
  }

  // Each code block gets a Copy button (the click is handled once, on the list: onCopy).
  function withCopyButtons(fragment) {
    for (const pre of fragment.querySelectorAll("pre")) {
      const block = document.createElement("div");
      block.className = "code-block";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy";
      pre.replaceWith(block);
      block.append(copy, pre);
    }
    return fragment;
  }

  function appendMessage(message) {
    const list = $("messages");
    const item = messageItem(message);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function replaceMessage(item, message) {
    const fresh = messageItem(message);
    item.replaceWith(fresh);
    $("messages").scrollTop = $("messages").scrollHeight;
    return fresh;
  }

  function showMessages(messages) {
    $("messages").replaceChildren(...messages.map(messageItem));
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  // --- actions ---------------------------------------------------------------------

  async function run(action, thinking = false) {
    if (state.busy) return undefined;
    state.offerRetry = false;
    setBusy(true, thinking);
    notify("");
    try {
      return await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && state.username) {
        showAuth();
        notify("Your session expired or was closed; log in again.");
      } else {
        notify(describe(error));
      }
      return undefined;
    } finally {
      setBusy(false, false);
    }
  }

  async function loadConversations(select) {
    state.conversations = await allConversations();
    const ids = state.conversations.map((c) => c.id);
    state.current = ids.includes(select) ? select : (ids[0] || null);
    renderConversations();
    showMessages(state.current ? await fullHistory(state.current) : []);
  }

  async function enter(session) {
    state.csrf = session.csrf_token;
    state.username = session.username;
    showChat();
    await loadConversations(null);
    $("input").focus();
  }

  async function onAuthSubmit(event) {
    event.preventDefault();
    const mode = event.submitter && event.submitter.value === "register" ? "register" : "login";
    const credentials = { username: $("username").value.trim(), password: $("password").value };
    await run(async () => {
      if (mode === "register") await api("POST", "/api/register", credentials);
      await enter(await api("POST", "/api/login", credentials));
    });
    $("password").value = "";
  }

  async function onSend(event) {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    // One message at a time; what is typed meanwhile stays in the box for later.
    if (state.busy || !text.trim()) return;
    await run(async () => {
      const pending = appendMessage({ role: "user", content: text });
      input.value = "";
      let reply = null;
      // A redraw per animation frame at most, however many deltas arrive in between.
      let latest = null;
      let frame = 0;
      const draw = () => {
        frame = 0;
        reply = reply ? replaceMessage(reply, latest) : appendMessage(latest);
      };
      const settle = (message) => {
        cancelAnimationFrame(frame);
        frame = 0;
        reply = reply ? replaceMessage(reply, message) : appendMessage(message);
      };
      try {
        if (state.current === null) {
          const title = text.trim().split("\n")[0].slice(0, 60);
          const conversation = await api("POST", "/api/conversations", { title });
          state.conversations.unshift(conversation);
          state.current = conversation.id;
          renderConversations();
        }
        const path = conversationPath(state.current) + "/messages";
        const stored = await streamed(path, { content: text }, (soFar) => {
          latest = { role: "assistant", content: soFar };
          $("thinking").hidden = true;
          if (!frame) frame = requestAnimationFrame(draw);
        });
        settle(stored);
      } catch (error) {
        cancelAnimationFrame(frame);
        frame = 0;
        if (error.delivered || (error instanceof ApiError && error.status >= 500)) {
          // The server stored the message before its backend failed: keep it, show what
          // arrived (stored marked incomplete too), and offer to ask again.
          if (error.partial) settle({ role: "assistant", content: error.partial, incomplete: true });
          state.offerRetry = true;
        } else {
          // Not stored: take it off the screen and put the text back, ready to send again,
          // ahead of anything typed since.
          pending.remove();
          if (reply) reply.remove();
          input.value = input.value ? text + "\n" + input.value : text;
        }
        throw error;
      }
    }, true);
    input.focus();
  }

  async function onRetry() {
    if (state.current === null) return;
    await run(async () => {
      try {
        const data = await api("POST", conversationPath(state.current) + "/reply", {});
        appendMessage(data.reply);
      } catch (error) {
        if (error instanceof ApiError && (error.status === 0 || error.status >= 500)) {
          state.offerRetry = true;
        }
        throw error;
      }
    }, true);
  }

  function onKeydown(event) {
    // Enter sends (not while a reply is on its way); Shift+Enter keeps the textarea's own
    // new line.
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey ||
        event.metaKey || event.isComposing) return;
    event.preventDefault();
    if (!state.busy) $("composer").requestSubmit();
  }

  const copyTimers = new WeakMap(); // button -> the timer that puts its label back

  async function onCopy(event) {
    const button = event.target.closest("button.copy");
    const pre = button && button.parentElement.querySelector("pre");
    if (!pre) return;
    let label = "Copied";
    try {
      await navigator.clipboard.writeText(pre.textContent);
    } catch (_) {
      // No clipboard access (e.g. plain http on another host): select the code instead.
      window.getSelection().selectAllChildren(pre);
      label = "Selected: press Ctrl+C";
    }
    button.textContent = label;
    clearTimeout(copyTimers.get(button));
    copyTimers.set(button, setTimeout(() => { button.textContent = "Copy"; }, 2000));
  }

  async function onPick(event) {
    const button = event.target.closest("button.conversation");
    if (!button || button.dataset.id === state.current) return;
    await run(async () => {
      const messages = await fullHistory(button.dataset.id);
      state.current = button.dataset.id;
      renderConversations();
      showMessages(messages);
    });
    if (state.username) $("input").focus();
  }

  function onNew() {
    state.current = null;
    renderConversations();
    showMessages([]);
    notify("");
    $("input").focus();
  }

  async function onDelete() {
    if (state.current === null) return;
    if (!window.confirm("Delete this conversation and all its messages?")) return;
    await run(async () => {
      await api("DELETE", conversationPath(state.current));
      await loadConversations(null);
    });
  }

  async function onLogout() {
    await run(async () => {
      await api("POST", "/api/logout", {});
      showAuth();
    });
    if (!state.username) notify("Logged out.", false);
  }

  async function start() {
    $("auth-form").addEventListener("submit", onAuthSubmit);
    $("composer").addEventListener("submit", onSend);
    $("input").addEventListener("keydown", onKeydown);
    $("conversation-list").addEventListener("click", onPick);
    $("new-conversation").addEventListener("click", onNew);
    $("delete-conversation").addEventListener("click", onDelete);
    $("logout").addEventListener("click", onLogout);
    $("retry").addEventListener("click", onRetry);
    $("messages").addEventListener("click", onCopy);
    // A reload keeps the session (HttpOnly cookie); ask the server who we are and for the
    // CSRF token, which the page cannot read from the cookie.
    try {
      await enter(await api("GET", "/api/session"));
    } catch (error) {
      showAuth();
      if (!(error instanceof ApiError && error.status === 401)) notify(describe(error));
    }
  }

  start();
})();
