package mcpauthstack.keycloak;

import com.fasterxml.jackson.annotation.JsonProperty;
import java.net.URI;
import java.net.URISyntaxException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.keycloak.models.KeycloakSession;
import org.keycloak.representations.idm.ClientPolicyExecutorConfigurationRepresentation;
import org.keycloak.representations.idm.ClientRepresentation;
import org.keycloak.services.clientpolicy.ClientPolicyContext;
import org.keycloak.services.clientpolicy.ClientPolicyException;
import org.keycloak.services.clientpolicy.context.ClientCRUDContext;
import org.keycloak.services.clientpolicy.context.DynamicClientRegisterContext;
import org.keycloak.services.clientpolicy.executor.ClientPolicyExecutorProvider;

/**
 * Keeps anonymous registrations to RFC 7591's endpoint, and refuses a client whose redirect,
 * post-logout redirect or front-channel logout URL names a host other than loopback or the
 * configured https hosts, comparing host names as text; a {@code client_uri} outside them is
 * dropped, and a URL Keycloak itself would call (sector identifier, JWKS, request object,
 * back-channel logout, CIBA notification) is refused whatever its host.
 *
 * <p>Why: Keycloak 26.7.3's secure-redirect-uris-enforcer asks DNS whether a host is loopback (a
 * stranger's name resolving to 127.0.0.1 while he registers passes), and checks nothing for a
 * client without a redirect flow, whose post-logout URI then makes the realm's logout an open
 * redirect. Its secure-client-uris-pattern executor compares text but refuses every client made
 * from a Client ID Metadata Document. This one runs for registrations, metadata documents and
 * updates alike. Keycloak's {@code default} provider takes a whole client representation (its
 * client id, root URL, default roles, any attribute) from anyone; no MCP client uses it
 * (docs/decisions.md, 75).
 */
public final class ClientUriHostsExecutor implements ClientPolicyExecutorProvider<ClientUriHostsExecutor.Configuration> {

    /** The hosts a native client's redirect URI names for this machine (RFC 8252 7.3, and localhost). */
    static final List<String> LOOPBACK_HOSTS = List.of("localhost", "127.0.0.1", "[::1]");

    public static final class Configuration extends ClientPolicyExecutorConfigurationRepresentation {
        @JsonProperty(ClientUriHostsExecutorFactory.HTTPS_HOSTS)
        private List<String> httpsHosts;

        public List<String> getHttpsHosts() {
            return httpsHosts;
        }

        public void setHttpsHosts(List<String> httpsHosts) {
            this.httpsHosts = httpsHosts;
        }
    }

    /**
     * The client attributes holding URLs Keycloak requests itself, each with the RFC 7591 / OpenID
     * Connect member that sets it: the sector identifier at registration, the JWKS when it checks a
     * request object or encrypts a token, request objects at sign-in, logout tokens at logout, CIBA
     * notifications. A stranger naming them makes Keycloak send requests where it reaches (blind
     * SSRF); a public native client needs none of them.
     */
    static final List<Map.Entry<String, String>> URLS_KEYCLOAK_REQUESTS = List.of(
            Map.entry("sectorIdentifierUri", "sector_identifier_uri"),
            Map.entry("jwks.url", "jwks_uri"),
            Map.entry("request.uris", "request_uris"),
            Map.entry("backchannel.logout.url", "backchannel_logout_uri"),
            Map.entry("ciba.backchannel.client.notification.endpoint", "backchannel_client_notification_endpoint"));

    /**
     * Grants an anonymous registrant may not turn on, each client attribute with its grant type:
     * CIBA's authentication endpoint answers a login hint naming a user of the realm otherwise
     * than one naming nobody, which lets anyone list the realm's usernames and addresses.
     */
    static final List<Map.Entry<String, String>> GRANTS_REFUSED = List.of(
            Map.entry("oidc.ciba.grant.enabled", "urn:openid:params:grant-type:ciba"));

    /** The one registration provider open to anonymous callers: RFC 7591's. */
    static final String OPENID_CONNECT_REGISTRATION = "openid-connect";

    private final KeycloakSession session;
    private List<String> httpsHosts = List.of();

    public ClientUriHostsExecutor(KeycloakSession session) {
        this.session = session;
    }

    @Override
    public void setupConfiguration(Configuration configuration) {
        List<String> hosts = new ArrayList<>();
        if (configuration.getHttpsHosts() != null) {
            for (String host : configuration.getHttpsHosts()) {
                if (host != null && !host.isBlank()) hosts.add(host.trim().toLowerCase(Locale.ROOT));
            }
        }
        this.httpsHosts = List.copyOf(hosts);
    }

    @Override
    public Class<Configuration> getExecutorConfigurationClass() {
        return Configuration.class;
    }

    @Override
    public String getProviderId() {
        return ClientUriHostsExecutorFactory.PROVIDER_ID;
    }

    @Override
    public void executeOnEvent(ClientPolicyContext context) throws ClientPolicyException {
        switch (context.getEvent()) {
            case REGISTER, UPDATE -> {
                // Every registering or updating context of 26.7.3 carries the client; one that does
                // not is refused rather than let through unread.
                ClientRepresentation client = context instanceof ClientCRUDContext crud ? crud.getProposedClientRepresentation() : null;
                if (client == null) {
                    throw new ClientPolicyException("invalid_request", "The client to register could not be read.");
                }
                if (context instanceof DynamicClientRegisterContext && !OPENID_CONNECT_REGISTRATION.equals(registrationEndpoint())) {
                    throw new ClientPolicyException(
                            "unsupported_registration_endpoint",
                            "Anonymous registration is open at clients-registrations/openid-connect (RFC 7591) only.");
                }
                checkClientUris(client);
            }
            default -> {
            }
        }
    }

    /** The registration provider the request names: {@code clients-registrations/{provider}}. */
    private String registrationEndpoint() {
        return session.getContext().getUri().getPathParameters().getFirst("provider");
    }

    private void checkClientUris(ClientRepresentation client) throws ClientPolicyException {
        if (client.getRedirectUris() != null) {
            for (String uri : client.getRedirectUris()) requireAllowed(uri, "redirect URI");
        }
        Map<String, String> attributes = client.getAttributes() == null ? Map.of() : client.getAttributes();
        for (Map.Entry<String, String> url : URLS_KEYCLOAK_REQUESTS) {
            String value = attributes.get(url.getKey());
            if (value != null && !value.isEmpty()) {
                throw new ClientPolicyException(
                        "invalid_client_metadata", url.getValue() + " is not accepted: this realm sends no requests to a client's URLs.");
            }
        }
        for (Map.Entry<String, String> grant : GRANTS_REFUSED) {
            if ("true".equals(attributes.get(grant.getKey()))) {
                throw new ClientPolicyException(
                        "invalid_client_metadata", "The grant type " + grant.getValue() + " is not accepted: users sign in here with the authorization code grant.");
            }
        }
        String postLogout = attributes.get("post.logout.redirect.uris");
        if (postLogout != null && !postLogout.isEmpty()) {
            for (String uri : postLogout.split("##")) {
                // "+": the client's redirect URIs, checked above.
                if (!uri.equals("+")) requireAllowed(uri, "post-logout redirect URI");
            }
        }
        requireAllowedIfSet(attributes.get("frontchannel.logout.url"), "front-channel logout URL");
        // client_uri: real clients name their own site (mcp-remote: GitHub), so it is dropped, not
        // refused; kept, it would make realms/{realm}/clients/{id}/redirect a redirect there.
        if (client.getBaseUrl() != null && !isAllowed(client.getBaseUrl(), httpsHosts)) client.setBaseUrl(null);
    }

    private void requireAllowedIfSet(String uri, String what) throws ClientPolicyException {
        if (uri != null && !uri.isEmpty()) requireAllowed(uri, what);
    }

    private void requireAllowed(String uri, String what) throws ClientPolicyException {
        if (!isAllowed(uri, httpsHosts)) {
            throw new ClientPolicyException("invalid_redirect_uri", "The " + what + " names a host this realm does not send users to.");
        }
    }

    /**
     * Whether {@code uri} is an absolute http(s) URL on a loopback host, or an https URL on one of
     * {@code httpsHosts}, without user info, fragment or wildcard. Host names are compared as
     * text, never resolved. A relative URI (which Keycloak resolves against the root URL) is
     * refused: no MCP client registers one.
     */
    static boolean isAllowed(String uri, List<String> httpsHosts) {
        if (uri == null) return false;
        for (int i = 0; i < uri.length(); i++) {
            char c = uri.charAt(i);
            // A backslash is a slash to a browser's URL parser; '*' is a wildcard to Keycloak.
            if (c == '\\' || c == '*' || Character.isWhitespace(c) || Character.isISOControl(c)) return false;
        }
        URI parsed;
        try {
            parsed = new URI(uri);
        } catch (URISyntaxException e) {
            return false;
        }
        if (parsed.isOpaque() || parsed.getRawUserInfo() != null || parsed.getRawFragment() != null) return false;
        String scheme = parsed.getScheme();
        String host = parsed.getHost();
        if (scheme == null || host == null) return false;
        host = host.toLowerCase(Locale.ROOT);
        if (scheme.equals("http") || scheme.equals("https")) {
            if (LOOPBACK_HOSTS.contains(host)) return true;
            return scheme.equals("https") && httpsHosts.contains(host);
        }
        return false;
    }
}
