package mcpauthstack.keycloak;

import com.fasterxml.jackson.annotation.JsonProperty;
import java.net.URI;
import java.net.URISyntaxException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.keycloak.representations.idm.ClientPolicyExecutorConfigurationRepresentation;
import org.keycloak.representations.idm.ClientRepresentation;
import org.keycloak.services.clientpolicy.ClientPolicyContext;
import org.keycloak.services.clientpolicy.ClientPolicyException;
import org.keycloak.services.clientpolicy.context.ClientCRUDContext;
import org.keycloak.services.clientpolicy.context.DynamicClientRegisterContext;
import org.keycloak.services.clientpolicy.executor.ClientPolicyExecutorProvider;

/**
 * Refuses a client whose redirect, post-logout, root, admin or front-channel logout URL names a
 * host other than loopback or the configured https hosts, comparing host names as text.
 *
 * <p>Why: Keycloak 26.7.3's secure-redirect-uris-enforcer asks DNS whether a host is loopback (a
 * stranger's name resolving to 127.0.0.1 while he registers passes), and checks nothing for a
 * client without a redirect flow, whose post-logout URI then makes the realm's logout an open
 * redirect. Its secure-client-uris-pattern executor compares text but refuses every client made
 * from a Client ID Metadata Document. This one runs for registrations, metadata documents and
 * updates alike (docs/decisions.md, 75).
 *
 * <p>A dynamic registration may not choose its client id or internal id either: Keycloak's
 * {@code default} provider takes both from the caller, which lets a registrant take a metadata
 * document's URL as his id, or delete his client and register its id again. Nor may it name
 * default roles, which that provider adds to the realm's default role, held by every user.
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

    private List<String> httpsHosts = List.of();

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
                if (!(context instanceof ClientCRUDContext crud)) return;
                ClientRepresentation client = crud.getProposedClientRepresentation();
                if (client == null) return;
                if (context instanceof DynamicClientRegisterContext
                        && (client.getClientId() != null || client.getId() != null)) {
                    throw new ClientPolicyException("invalid_client_metadata", "A registration does not choose its client id.");
                }
                // Keycloak's default provider makes each name a role of the new client and adds it
                // to the realm's default role, which every user holds: any number, from anyone.
                if (namesDefaultRoles(client)) {
                    throw new ClientPolicyException("invalid_client_metadata", "A registration does not add default roles to the realm.");
                }
                checkClientUris(client);
            }
            default -> {
            }
        }
    }

    // Deprecated in the representation, and still read by Keycloak 26.7.3's default provider.
    @SuppressWarnings("deprecation")
    private static boolean namesDefaultRoles(ClientRepresentation client) {
        return client.getDefaultRoles() != null && client.getDefaultRoles().length > 0;
    }

    private void checkClientUris(ClientRepresentation client) throws ClientPolicyException {
        if (client.getRedirectUris() != null) {
            for (String uri : client.getRedirectUris()) requireAllowed(uri, "redirect URI");
        }
        Map<String, String> attributes = client.getAttributes() == null ? Map.of() : client.getAttributes();
        String postLogout = attributes.get("post.logout.redirect.uris");
        if (postLogout != null && !postLogout.isEmpty()) {
            for (String uri : postLogout.split("##")) {
                // "+": the client's redirect URIs, checked above.
                if (!uri.equals("+")) requireAllowed(uri, "post-logout redirect URI");
            }
        }
        requireAllowedIfSet(client.getRootUrl(), "root URL");
        requireAllowedIfSet(client.getAdminUrl(), "admin URL");
        requireAllowedIfSet(attributes.get("frontchannel.logout.url"), "front-channel logout URL");
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
