// stepup pages: the WebAuthn ceremonies and the copy button. Everything else works without it.
"use strict";

(function () {
  // -- base64url, for browsers without the WebAuthn JSON helpers ---------------------------
  function toBytes(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: toBytes(c.id) }));
  }

  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      user: Object.assign({}, json.user, { id: toBytes(json.user.id) }),
      excludeCredentials: withIds(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    });
  }

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) response.userHandle = toText(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  // -- the ceremony ------------------------------------------------------------------------
  async function post(form, fields) {
    const body = new URLSearchParams();
    body.set("csrf", form.elements.csrf.value);
    for (const [name, value] of Object.entries(fields)) body.set(name, value);
    // Not form.action: the form's input named "action" shadows that property.
    const response = await fetch(form.getAttribute("action") || window.location.href, {
      method: "POST",
      body: body,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    return { status: response.status, data: await response.json() };
  }

  async function ceremony(form, status) {
    const started = await post(form, { action: "webauthn-options" });
    if (!started.data.publicKey) throw new Error(started.data.error_description || "");
    const json = started.data.publicKey;
    status.textContent = "Follow your browser’s prompt.";
    const credential = json.user
      ? await navigator.credentials.create({ publicKey: creationOptions(json) })
      : await navigator.credentials.get({ publicKey: requestOptions(json) });
    const fields = { action: "webauthn", credential: JSON.stringify(credentialJSON(credential)) };
    if (form.elements.name) fields.name = form.elements.name.value;
    const finished = await post(form, fields);
    if (finished.data.location) {
      status.textContent = "Done.";
      window.location.assign(finished.data.location);
      return;
    }
    throw new Error(finished.data.error_description || "");
  }

  function setUpWebAuthn(form) {
    const button = form.querySelector("[data-webauthn-button]");
    const status = form.querySelector("[data-webauthn-status]");
    if (!window.PublicKeyCredential || !navigator.credentials) {
      status.textContent = "This browser cannot use passkeys.";
      return;
    }
    button.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      status.textContent = "Starting…";
      try {
        await ceremony(form, status);
      } catch (error) {
        // NotAllowedError: the user cancelled, the prompt timed out, or verification failed.
        status.textContent =
          error && error.message && error.name === "Error"
            ? error.message
            : "That did not work. Try again, or use another way.";
        button.disabled = false;
      }
    });
  }

  // -- copy the recovery codes -------------------------------------------------------------
  function setUpCopy(button) {
    const list = document.getElementById(button.dataset.copy);
    const status = document.querySelector("[data-copy-status]");
    if (!list || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const codes = Array.from(list.querySelectorAll("code"), (c) => c.textContent);
      try {
        await navigator.clipboard.writeText(codes.join("\n"));
        status.textContent = "Copied.";
      } catch (error) {
        status.textContent = "Copying is not allowed here; select the codes instead.";
      }
    });
  }

  document.querySelectorAll("form[data-webauthn]").forEach(setUpWebAuthn);
  document.querySelectorAll("[data-copy]").forEach(setUpCopy);
})();
